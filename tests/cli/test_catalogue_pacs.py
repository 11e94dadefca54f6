"""The catalogue for the PACS commands: what a user gets from the installed `regionmir listen` and
`regionmir ingest URL` for bad options, as in `test_catalogue.py` (one `error:` line naming the
option, exit 2 for usage errors and 1 otherwise, no traceback, no patient data) plus: nothing is
made on disk for a refused option.
"""

from __future__ import annotations

import socket

import pytest
from helpers.catalogue import assert_error, cli

# id: (--ae-title value, what the message says)
AE_TITLES = {
    "17+ characters": ("ABCDEFGHIJKLMNOPQRSTU", "1 to 16"),
    "backslash": ("A\\B", "backslash"),
    "empty": ("", "1 to 16"),
    "climbs out of the spool": ("../../../zz", "'..'"),
    "slash": ("PACS/1", "slash"),
    "control character": ("AE\tX", "printable ASCII"),
}


@pytest.mark.parametrize("case", AE_TITLES.values(), ids=AE_TITLES.keys())
def test_a_bad_ae_title_is_a_usage_error_and_makes_nothing(world, tmp_path, case):
    """The title names the spool folder: checked before anything is created, in or out of the home."""
    title, says = case
    home = tmp_path / "home"
    result = cli(world, "listen", "--ae-title", title, "--model", str(world.model), "--port", "11155", home=home)
    assert_error(world, result, 2, "--ae-title", says, "--help")
    assert not home.exists() and list(tmp_path.iterdir()) == []


def test_an_unknown_host_is_named_as_the_problem(world, tmp_path):
    """`--host 999.1.1.1` once said "pick a free port with --port"."""
    result = cli(world, "listen", "--host", "999.1.1.1", "--model", str(world.model), "--port", str(_free_port()),
                 home=tmp_path / "home")
    line = assert_error(world, result, 1, "999.1.1.1", "--host")
    assert "--port" not in line


@pytest.mark.parametrize("value", ["10.0.0.300", "pacs.example", "10.0.0.0/40"])
def test_a_bad_allow_peer_is_a_usage_error(world, tmp_path, value):
    result = cli(world, "listen", "--allow-peer", value, "--model", str(world.model), home=tmp_path / "home")
    assert_error(world, result, 2, "--allow-peer", "CIDR", "--help")
    assert not (tmp_path / "home").exists()


def test_a_bare_token_in_a_dicomweb_url_is_refused_and_never_shown(world, tmp_path):
    """`http://TOKEN@host/...` puts the token where logs and shell history keep it, as user:password does."""
    result = cli(world, "ingest", "http://s3cr3t-TOKEN@127.0.0.1:9/dicom-web", "--model", str(world.model),
                 home=tmp_path / "home")
    line = assert_error(world, result, 1, "REGIONMIR_DICOMWEB_TOKEN")
    assert "s3cr3t-TOKEN" not in result.stdout + result.stderr, line


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
