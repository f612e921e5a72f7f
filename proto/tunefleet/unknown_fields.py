"""Finding the fields of a received message that this build's protobuf schema does not know.

Protobuf keeps fields it cannot name as *unknown* and otherwise ignores them. For a study that
is right for telemetry and wrong for intent: a newer client's budget key (``max_gpu_hours``,
say) sent to an older coordinator would be dropped in silence and the study would run without
the limit its owner set. :func:`refuse_unknown_fields` turns that into a refusal that names the
fields, so the request changes nothing. The coordinator applies it to every signed request that
changes state on a person's behalf (a study's submission, a stop, an access change); node events
are telemetry and keep the default.
"""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

from tunefleet import __version__
from tunefleet.errors import InvalidInputError

__all__ = ["refuse_unknown_fields", "unknown_field_paths"]


def unknown_field_paths(message: Message, prefix: str = "") -> list[str]:
    """Dotted paths of every unknown field in ``message`` and the messages it holds, as
    ``known.path.NUMBER`` (an unknown field has no name here, only its number); repeated and
    map entries add ``[index]`` or ``[key]``. Empty when the whole message is known."""
    unknown = UnknownFieldSet(message)
    found = [f"{prefix}{unknown[i].field_number}" for i in range(len(unknown))]
    for descriptor, value in message.ListFields():
        entry = descriptor.message_type
        if descriptor.type != FieldDescriptor.TYPE_MESSAGE or entry is None:
            continue
        path = f"{prefix}{descriptor.name}"
        if entry.GetOptions().map_entry:
            value_field = entry.fields_by_name["value"]
            if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                for key in sorted(value):
                    found += unknown_field_paths(value[key], f"{path}[{key}].")
        elif descriptor.is_repeated:
            for i, item in enumerate(value):
                found += unknown_field_paths(item, f"{path}[{i}].")
        else:
            found += unknown_field_paths(value, f"{path}.")
    return found


def refuse_unknown_fields(message: Message, field: str) -> None:
    """Raise :class:`InvalidInputError` naming ``field`` when ``message`` carries fields this
    build does not know (sent by a newer client); return quietly otherwise."""
    paths = unknown_field_paths(message)
    if paths:
        raise InvalidInputError(
            field,
            "unknown field number(s) " + ", ".join(paths[:8]) + (" ..." if len(paths) > 8 else ""),
            f"only settings this coordinator (tunefleet {__version__}) knows: it would ignore "
            "these, so upgrade the coordinator or leave the newer settings out",
        )
