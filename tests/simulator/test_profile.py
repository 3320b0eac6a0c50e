"""Profiles: the shipped ones load; a bad one is an error naming file, key and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from batcher.errors import JobError
from batcher.simulator.profile import (
    Credentials,
    ProfileError,
    Rate,
    load_profile,
    profile_from_dict,
)
from batcher.simulator.state import State

REPO = Path(__file__).resolve().parents[2]


def test_builtin_demo_profile_is_the_default() -> None:
    demo = load_profile(None)
    assert demo == load_profile(REPO / "jobs" / "simulator" / "demo.toml").replace(
        source=demo.source
    )
    assert demo.state.customers == 2000
    assert demo.state.programs == tuple(f"partner-{j:02d}" for j in range(1, 6))
    assert demo.quota.rate == Rate(3000, 60.0)
    assert 0 < demo.faults.throttle < 0.1
    assert 0 < demo.faults.server_error < 0.1
    assert (demo.latency.fixed_ms, demo.latency.fixed_ms + demo.latency.spread_ms) == (20, 80)


def test_clean_profile_has_no_trouble_and_the_same_credentials() -> None:
    clean = load_profile(REPO / "jobs" / "simulator" / "clean.toml")
    demo = load_profile(None)
    assert clean.credentials == demo.credentials
    assert clean.state == demo.state
    assert clean.quota.rate is None
    assert not clean.faults.any_request_fault
    assert clean.latency.fixed_ms + clean.latency.spread_ms == 0


def test_shipped_profiles_are_package_files() -> None:
    for name in ("demo.toml", "clean.toml"):
        link = REPO / "jobs" / "simulator" / name
        assert link.is_symlink()
        assert link.resolve() == REPO / "batcher" / "simulator" / "profiles" / name


def test_credentials_repr_hides_secrets() -> None:
    text = repr(load_profile(None))
    assert "demo-password" not in text
    assert "demo-secret" not in text
    assert "demo.till" in text
    assert Credentials().basic_password == "demo-password"


@pytest.mark.parametrize(
    ("toml", "key", "allowed"),
    [
        ('seed = "x"', "seed", "an integer"),
        ('response_shape = "new"', "response_shape", "current or legacy"),
        ("colour = 1", "colour", "response_shape"),
        ('[quota]\nrate = "lots"', "quota.rate", '"3000/minute"'),
        ('[quota]\nrate = "2.5/second"', "quota.rate", '"3000/minute"'),  # whole requests
        ('[quota]\nwindow = "rolling"', "quota.window", "fixed or sliding"),
        ("[faults]\nhang = 1.5", "faults.hang", "a probability from 0 to 1"),
        ("[auth]\nexpired_token_status = 403", "auth.expired_token_status", "401 or 498"),
        ('[state]\nfile = "missing.csv"', "state.file", "relative to the profile"),
        ('[slowdown]\nrate = "1/second"', "slowdown.rate", "after_requests"),
    ],
)
def test_bad_profile_names_file_key_and_what_is_allowed(
    tmp_path: Path, toml: str, key: str, allowed: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml + "\n")
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    text = str(caught.value)
    assert str(path) in text
    assert f"'{key}'" in text
    assert allowed in text
    assert isinstance(caught.value, JobError)
    assert caught.value.exit_code == 2


def test_missing_and_invalid_toml_files(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile(tmp_path / "nope.toml")
    (tmp_path / "broken.toml").write_text("seed = [\n")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile(tmp_path / "broken.toml")


def test_state_from_a_csv_file_relative_to_the_profile(tmp_path: Path) -> None:
    (tmp_path / "links.csv").write_text(
        "id,mobile,email,externalId,program\n"
        "7,911111111111,a@x.org,A,gold\n"
        "7,911111111111,a@x.org,A,silver\n"
        "8,922222222222,b@x.org,B,\n"
    )
    (tmp_path / "p.toml").write_text('[state]\nfile = "links.csv"\n')
    state = State(load_profile(tmp_path / "p.toml"))
    assert state.programs == ("gold", "silver")
    assert state.initial_links == 2
    a = state.find("email", "A@X.org")
    assert a is not None
    assert state.is_linked(a, "gold")
    b = state.find("mobile", "922222222222")
    assert b is not None
    assert not state.is_linked(b, "gold")
    assert state.find("id", "9") is None


def test_profile_from_dict_builds_variants_in_code() -> None:
    prof = profile_from_dict({"quota": {"rate": "5/second", "window": "sliding"}})
    assert prof.quota.rate == Rate(5, 1.0)
    assert prof.source is None
    assert prof.replace(seed=3).seed == 3
