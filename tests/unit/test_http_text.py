from shared.http import storable_text


def test_nul_and_lone_surrogates_are_not_storable() -> None:
    assert storable_text({"a": ["ok", "ünïcode ✓", 1, None]})
    assert not storable_text({"a": "x\x00y"})
    assert not storable_text({"a": ["\udbf7"]})
    assert not storable_text({"\x00": 1})
