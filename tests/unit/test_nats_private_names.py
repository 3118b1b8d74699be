"""No private nats-py name is used outside :mod:`kadence._nats` (issue 26).

import-linter cannot forbid attribute access, so this reads the source: any ``._name`` from the
list below in ``worker/``, ``operator/`` or ``bench/`` outside ``worker/kadence/_nats/`` fails,
naming its file and line. The names are those nats-py's Client, Msg and Subscription keep
private that Kadence has used (or might reach for); a use that is Kadence's own attribute of the
same name (``self._pending`` of the status writer) is told apart by its receiver.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ADAPTER = ROOT / "worker" / "kadence" / "_nats"

PRIVATE = re.compile(
    r"\._(send_command|flush_pending|transport|process_msg|build_message|parse_header_lines|ackd"
    r"|process_headers|remove_sub|pending|pending_data_size|max_pending_size|nc|id|sid|subs"
    r"|flush_queue|flusher_task|max_payload|send_publish|send_subscribe|send_unsubscribe|status"
    r"|conn|client|jsi|resp_map)\b"
)
#: Kadence's own attributes that happen to share a name: ``self._pending`` etc. on its classes.
OWN = re.compile(r"\bself\._(pending|nc|status|conn|client|id|sid|subs)\b")


def offences() -> list[str]:
    found = []
    for top in ("worker", "operator", "bench"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if path.is_relative_to(ADAPTER) or ".venv" in path.parts:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                for match in PRIVATE.finditer(code):
                    if OWN.search(code, max(0, match.start() - 4), match.end()):
                        continue
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    return found


def test_no_private_nats_py_name_outside_the_adapter() -> None:
    found = offences()
    assert not found, "private nats-py names outside kadence._nats:\n" + "\n".join(found)


def test_the_check_finds_a_private_name() -> None:
    assert PRIVATE.search("        msg._ackd = True")
    assert PRIVATE.search("Requests(nc if nc is not None else js._nc)")
    assert not OWN.search("js._nc")
    assert OWN.search("self._pending.get(key)")
