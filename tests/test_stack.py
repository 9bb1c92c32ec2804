"""The local stack's pre-flight check: a busy port is named before anything starts."""

from __future__ import annotations

import socket

from ensemble_extproc.stack import ports_in_use

from helpers import free_port, make_config


def test_a_listening_port_is_reported_by_its_config_key() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        busy_port = listener.getsockname()[1]
        listen = {
            "envoy": f"127.0.0.1:{free_port()}",
            "envoy_admin": f"127.0.0.1:{free_port()}",
            "extproc": f"127.0.0.1:{free_port()}",
            "upstream": f"127.0.0.1:{busy_port}",
        }
        config = make_config({"m": "http://127.0.0.1:9/v1"}, listen=listen)
        busy = ports_in_use(config)
    assert len(busy) == 1
    assert busy[0].startswith(f"listen.upstream (127.0.0.1:{busy_port})")
    assert ports_in_use(config) == []  # free again once the listener is closed
