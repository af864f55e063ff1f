"""Commands that fight over one set, for tests of commands under concurrency and faults."""

from __future__ import annotations

from schemas.messages import DeleteDuplicates, MakeOriginal


def clashing_commands(
    portal: str, first: str, second: str, third: str, rounds: int
) -> list[MakeOriginal | DeleteDuplicates]:
    """Per round: pin `first`, pin `second`, delete the others around each of them.

    Every id is distinct, so each command is carried out once; together they try every way of
    leaving the set without an original.
    """
    commands: list[MakeOriginal | DeleteDuplicates] = []
    for n in range(rounds):
        commands += [
            MakeOriginal(command_id=f"m{first}-{n}", portal_id=portal, asset_id=first),
            MakeOriginal(command_id=f"m{second}-{n}", portal_id=portal, asset_id=second),
            DeleteDuplicates(
                command_id=f"d{first}-{n}",
                portal_id=portal,
                original_id=first,
                asset_ids=[second, third],
            ),
            DeleteDuplicates(
                command_id=f"d{second}-{n}",
                portal_id=portal,
                original_id=second,
                asset_ids=[first, third],
            ),
        ]
    return commands
