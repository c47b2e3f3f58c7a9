"""The top-level API: what ``import transport`` offers, and what it leaves in the modules."""

from __future__ import annotations

import inspect

import pytest

import transport


def test_the_top_level_offers_the_clients_profiles_errors_and_values() -> None:
    assert len(transport.__all__) == len(set(transport.__all__))
    for name in transport.__all__:
        value = getattr(transport, name)
        assert isinstance(value, str) or inspect.getdoc(value), f"{name} has no docstring"
    for facade in (transport.DmpClient, transport.InsiClient, transport.TeleservicesClient):
        assert callable(facade.from_profile)
    errors = [getattr(transport, name) for name in transport.__all__ if name.endswith("Error")]
    assert all(issubclass(error, transport.CisisError) for error in errors)
    tree = {
        name
        for name, value in vars(transport.errors).items()
        if isinstance(value, type) and issubclass(value, transport.CisisError)
    }
    assert tree <= set(transport.__all__)  # the whole exception tree, to catch any of it


def test_the_dmp_access_values_are_the_vihf_ones() -> None:
    from transport import vihf

    assert transport.DmpAccess is vihf.DmpAccess
    assert transport.DmpAccessMode is vihf.DmpAccessMode
    assert {"DmpAccess", "DmpAccessMode"} <= set(dir(transport))


@pytest.mark.parametrize(
    "internal", ["build_envelope", "parse_xml", "rfc2253_dn", "SoapClient", "wsdl_path"]
)
def test_internals_stay_in_their_modules(internal: str) -> None:
    assert internal not in transport.__all__
    assert not hasattr(transport, internal)
