"""Making lazily mapped numpy memory resident now rather than on first use.

Large ``np.zeros`` arrays are mapped by the OS page by page the first time each page is
written. For capacity-sized tables (a million user rows) that spreads page faults and
RSS growth over the hours in which ids arrive. With ``preprocess.preallocate`` the
service takes that memory at startup instead: flat RSS, and no first-touch faults in
hot loops. Both the preprocessing structures and the learners' tables use this.

>>> import numpy as np
>>> a = np.zeros((1000, 8)); prefault(a); float(a.sum())
0.0
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

PAGE_BYTES = 4096


def prefault(array: npt.NDArray[Any]) -> None:
    """Make the OS back every page of ``array`` now (one write per page, values kept).

    Arrays that are empty, not C-contiguous or read-only are left alone.
    """
    if not array.size or not array.flags.c_contiguous or not array.flags.writeable:
        return
    flat = array.reshape(-1).view(np.uint8)
    # A copy: numpy skips assigning a view to itself, which would touch nothing.
    flat[::PAGE_BYTES] = flat[::PAGE_BYTES].copy()
