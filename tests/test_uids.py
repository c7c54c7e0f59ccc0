import numpy as np
import pytest

from kl_filter.core.errors import KLFilterError
from kl_filter.core.uids import UID_DTYPE, check_uid_array, hex_to_u8u8, load_uids, save_uids, sort_uids, u8u8_to_hex

EDGE = ["0" * 32, "f" * 32, "0" * 15 + "1" + "0" * 16, "0" * 31 + "1", "00000000000000ff000000000000abcd",
        "8000000000000000" + "7fffffffffffffff", "F" * 16 + "a" * 16]


def plain(uids):
    """DataComp's own per-row conversion, written plainly."""
    return np.array([(int(u[:16], 16), int(u[16:32], 16)) for u in uids], np.dtype("u8,u8"))


def test_round_trip_edge_values():
    arr = hex_to_u8u8(EDGE)
    assert arr.dtype == UID_DTYPE
    assert arr.tolist() == plain(EDGE).tolist()
    assert [x.decode() for x in u8u8_to_hex(arr)] == [u.lower() for u in EDGE]
    assert arr[0].tolist() == (0, 0) and arr[1].tolist() == (2**64 - 1, 2**64 - 1)
    assert arr[2].tolist() == (1, 0) and arr[3].tolist() == (0, 1)


def test_random_matches_plain_and_sorted_like_numpy():
    rng = np.random.default_rng(0)
    uids = [f"{int(a):016x}{int(b):016x}" for a, b in rng.integers(0, 2**63, size=(5000, 2), dtype=np.uint64)]
    uids += uids[:10]  # duplicates sort next to each other
    arr = hex_to_u8u8(uids)
    ref = plain(uids)
    assert (arr == ref).all()
    ref.sort()  # what DataComp does before np.save
    assert (sort_uids(arr) == ref).all()


def test_save_load_exact_dtype_sorted(tmp_path):
    p = str(tmp_path / "sub" / "x.npy")
    save_uids(p, hex_to_u8u8(EDGE[::-1]))
    arr = np.load(p)
    assert arr.dtype == np.dtype("u8,u8") and arr.dtype.names == ("f0", "f1")
    assert (arr == np.sort(plain(EDGE))).all()
    assert check_uid_array(load_uids(p), p, pool_uids=hex_to_u8u8(EDGE))["rows"] == len(EDGE)
    assert [f for f in __import__("os").listdir(tmp_path / "sub")] == ["x.npy"]  # no temp files left


@pytest.mark.parametrize("bad", ["abc", "g" * 32, "0" * 33, " " + "0" * 31])
def test_malformed_uid(bad):
    with pytest.raises(ValueError, match="32 hex digits"):
        hex_to_u8u8(["0" * 32, bad])


def test_check_rejects_wrong_dtype_unsorted_and_foreign():
    arr = plain(EDGE)
    with pytest.raises(KLFilterError, match="dtype"):
        check_uid_array(np.zeros(3, "u8"), "f.npy")
    with pytest.raises(KLFilterError, match="not sorted"):
        check_uid_array(arr[::-1].copy(), "f.npy")
    with pytest.raises(KLFilterError, match="not in the pool"):
        check_uid_array(np.sort(arr), "f.npy", pool_uids=arr[:3])
    with pytest.raises(KLFilterError, match="duplicated"):
        check_uid_array(np.sort(np.concatenate([arr, arr[:1]])), "f.npy", allow_duplicates=False)


def test_every_byte_both_cases_and_shared_first_halves():
    """Every byte value through the two-character lookup, in lower and upper case; uids sharing their first half
    sort by the second (the two-key path) and are not duplicates for the runner's pool check."""
    from kl_filter.runner import _locate_duplicate

    hexes = [bytes([b] * 16).hex() for b in range(256)]
    for case in (str.lower, str.upper):
        uids = [case(h) for h in hexes]
        assert (hex_to_u8u8(uids) == plain(uids)).all()
    assert [x.decode() for x in u8u8_to_hex(plain(hexes))] == hexes
    rng = np.random.default_rng(1)
    first = [f"{int(a):016x}" for a in rng.integers(0, 2**63, 3, dtype=np.uint64)]
    uids = [first[i % 3] + f"{int(b):016x}" for i, b in enumerate(rng.integers(0, 2**63, 300, dtype=np.uint64))]
    ref = plain(uids)
    ref.sort()
    assert (sort_uids(hex_to_u8u8(uids)) == ref).all()
    _locate_duplicate(None, [hex_to_u8u8(uids[:150]), hex_to_u8u8(uids[150:])])  # distinct: nothing raised


def test_a_bad_pair_names_its_row():
    good = "0123456789abcdef" * 2
    for bad in ("0123456789abcdeg" + "0" * 16, "x" + good[1:], good[:31] + "/"):
        with pytest.raises(ValueError, match=r"row 1 is '" + bad):
            hex_to_u8u8([good, bad, good])
