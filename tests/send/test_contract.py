"""The wire contract's helpers that the client, the simulator and the tests all use."""

from __future__ import annotations

from batcher.send.contract import basic_header, md5_hex


def test_the_basic_header_is_capillarys_scheme_username_and_md5_of_the_password() -> None:
    # Pinned to the literal: every party builds the header with this one helper, so only a
    # fixed value can tell that it is still the scheme the API expects.
    assert md5_hex("demo-password") == "4b4d9529148d8d9440d7e20c78287f69"
    assert (
        basic_header("demo.till", md5_hex("demo-password"))
        == "Basic ZGVtby50aWxsOjRiNGQ5NTI5MTQ4ZDhkOTQ0MGQ3ZTIwYzc4Mjg3ZjY5"
    )
