"""The generic CSV/JSONL reader and its column mapping, and implicit logs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from service.readers import ColumnMapping, read_implicit, read_table


def test_csv_ratings_in_seconds(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("uid,iid,stars,when\nu1,0042,4.5,1700000005\nu2,7,3,1700000001\n")
    t = read_table(path, ColumnMapping.parse("user=uid,item=iid,value=stars,timestamp=when"))
    assert t.kind == "ratings" and not t.synthetic_time
    assert t.item.tolist() == ["0042", "7"]  # ids stay strings
    assert t.value.tolist() == [4.5, 3.0]
    assert t.ts_ms.tolist() == [1700000005000, 1700000001000]
    assert t.time_ordered().user.tolist() == ["u2", "u1"]


def test_csv_clicks_with_maps_and_numbers(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("u,ad,t,clicked,device,page,age,price\n"
                    "u1,a1,1700000000000,true,ios,home,31,2.5\n"
                    "u2,a2,1700000000500,0,,search,,7\n")
    m = ColumnMapping.parse("user=u,item=ad,timestamp=t,label=clicked,context=device+page,"
                            "user_features=age,item_features=price,numeric=age+price")
    t = read_table(path, m)
    assert t.kind == "clicks"
    assert t.label.tolist() == [1.0, 0.0]
    assert t.ts_ms.tolist() == [1700000000000, 1700000000500]  # told apart as ms
    assert t.features["context"]["device"].tolist() == ["ios", None]
    assert t.features["context"]["page"].tolist() == ["home", "search"]
    age = t.features["user_features"]["age"]
    assert age[0] == 31.0 and np.isnan(age[1])
    assert t.features["item_features"]["price"].tolist() == [2.5, 7.0]


def test_jsonl_implicit_with_event_names_and_iso_times(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    lines = [{"who": 1, "what": "x", "at": "2024-01-01T00:00:01Z", "kind": "seen"},
             {"who": 2, "what": "y", "at": "2024-01-01T01:00:00+01:00", "kind": "bought"}]
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in lines) + b"\n\n")
    m = ColumnMapping.parse("user=who,item=what,timestamp=at,event=kind,"
                            "events=seen:click;bought:purchase")
    t = read_table(path, m)
    assert t.kind == "implicit"
    assert t.user.tolist() == ["1", "2"]
    assert t.event_type.tolist() == ["click", "purchase"]
    assert t.ts_ms.tolist() == [1704067201000, 1704067200000]
    assert t.target().tolist() == [1.0, 1.0]


def test_no_timestamp_means_file_order_with_synthetic_times(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("u,i,r\na,x,1\nb,y,2\nc,z,3\n")
    t = read_table(path, ColumnMapping.parse("user=u,item=i,value=r"), limit=2)
    assert t.synthetic_time and len(t) == 2
    assert np.all(np.diff(t.ts_ms) > 0)


def test_retailrocket_layout_by_default(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("timestamp,visitorid,event,itemid,transactionid\n"
                    "1433221332117,257597,view,355908,\n"
                    "1433224214164,992329,addtocart,248676,\n"
                    "1433221000000,257597,transaction,355908,4000\n")
    t = read_implicit(path)
    assert t.event_type.tolist() == ["click", "add_to_cart", "purchase"]
    assert t.time_ordered().event_type.tolist()[0] == "purchase"
    with pytest.raises(ValueError, match="event column"):
        read_implicit(path, ColumnMapping.parse("user=visitorid,item=itemid,value=event"))


@pytest.mark.parametrize(("mapping", "message"), [
    ("user=u,item=i", "exactly one target"),
    ("user=u,item=i,value=r,label=c", "exactly one target"),
    ("user=u,value=r", "needs item=COLUMN"),
    ("user=u,item=i,value=r,colour=c", "unknown --columns key 'colour'"),
    ("user=u,item=i,value=r,numeric=p", "not feature columns"),
    ("user=u,item=i,event=e,events=view:watch", "may map to"),
    ("user=u,item=i,value", "not key=column"),
])
def test_mapping_errors_say_what_to_fix(mapping: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ColumnMapping.parse(mapping)


def test_file_errors_say_what_to_fix(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("u,i,e,c\na,x,view,maybe\n")
    with pytest.raises(ValueError, match="no column \\['t'\\]"):
        read_table(path, ColumnMapping.parse("user=u,item=i,timestamp=t,event=e"))
    with pytest.raises(ValueError, match="not 0/1"):
        read_table(path, ColumnMapping.parse("user=u,item=i,label=c"))
    path.write_text("u,i,e\na,x,like\n")
    with pytest.raises(ValueError, match="events=NAME:TYPE"):
        read_table(path, ColumnMapping.parse("user=u,item=i,event=e"))
    path.write_text("u,i,r\n,x,1\n")
    with pytest.raises(ValueError, match="needs a user and an item"):
        read_table(path, ColumnMapping.parse("user=u,item=i,value=r"))
