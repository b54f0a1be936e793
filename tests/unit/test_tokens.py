from shared.tokens import (
    Pepper,
    classify,
    is_well_formed_opaque,
    new_databricks_token,
    new_opaque_token,
)


def test_opaque_token_checksum_detects_a_typo() -> None:
    token = new_opaque_token()
    assert is_well_formed_opaque(token)
    flipped = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    assert not is_well_formed_opaque(flipped)


def test_classify_tells_token_forms_apart() -> None:
    assert classify(new_opaque_token()) == "opaque"
    assert classify(new_databricks_token()) == "databricks"
    assert classify("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln") == "jwt"
    assert classify("hello") is None


def test_pepper_hash_depends_on_the_key_and_retired_keys_still_match() -> None:
    old = Pepper.parse("o" * 32)
    rotated = Pepper.parse("n" * 32 + "," + "o" * 32)
    token = new_opaque_token()
    assert old.hash(token) != rotated.hash(token)
    assert old.hash(token) in rotated.candidate_hashes(token)
