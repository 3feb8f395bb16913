# The README's two commands are `make demo` and `make test`. Both set everything up from
# a fresh machine (Python packages, Kafka jars, the S3 server, Prometheus) and cache it.
PYTHON ?= python3
PYTEST_ARGS ?=

.PHONY: help setup stack-up stack-down stack-status demo test test-unit lint bench

help:
	@echo "make demo        set up, start the local stack and run the demo"
	@echo "make test        set up, start the local stack and run the whole test suite"
	@echo "make test-unit   only the unit tests (no servers needed)"
	@echo "make lint        ruff and mypy"
	@echo "make stack-up | stack-down | stack-status"

setup:
	bash deploy/local/bootstrap.sh

stack-up: setup
	bash deploy/local/stack.sh up

stack-down:
	bash deploy/local/stack.sh down

stack-status:
	bash deploy/local/stack.sh status

demo: stack-up
	$(PYTHON) -m service demo

test: stack-up
	$(PYTHON) -m pytest $(PYTEST_ARGS)

test-unit: setup
	$(PYTHON) -m pytest tests/unit $(PYTEST_ARGS)

lint:
	$(PYTHON) -m ruff check service tests
	$(PYTHON) -m mypy service
