"""Commands that look at the network or at a node's identity: groups, nodes, id, invite."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from ..addresses import resolve
from ..errors import NetworkError
from ..identity import KEY_FILE, Identity, node_id_for

if TYPE_CHECKING:
    from ..records import GroupAdvert, Record
    from ..records.kinds import HeartbeatBody
from .common import (
    FiniteFloatRange,
    bootstrap_addresses,
    bootstrap_option,
    data_dir_option,
    peers_file_option,
    reading_time,
    run_async,
    with_timeout,
)


@click.command()
@bootstrap_option
@peers_file_option
@click.option("--task", help="Only groups learning this task.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one document per refresh).")
@click.option("--watch", is_flag=True, help="Keep refreshing until Ctrl-C.")
@click.option("--interval", default=2.0, show_default=True, type=FiniteFloatRange(0.1))
@click.option("--count", default=0, type=click.IntRange(0), help="With --watch: stop after N.")
@click.option(
    "--timeout",
    default=10.0,
    show_default=True,
    type=FiniteFloatRange(0.1),
    help="Seconds to wait for the network.",
)
def groups(
    bootstrap: tuple[str, ...],
    peers_file: Path | None,
    task: str | None,
    as_json: bool,
    watch: bool,
    interval: float,
    count: int,
    timeout: float,
) -> None:
    """List groups and their verified metrics."""
    from rich.console import Console
    from rich.live import Live

    from ..dht import ListingMemory, fetch_adverts
    from ..node import dht_client
    from .render import groups_table

    addrs = bootstrap_addresses(bootstrap, peers_file, required=True)
    console = Console()

    def emit_json(adverts: list[Any]) -> None:
        click.echo(json.dumps([a.to_json() for a in adverts]))

    read = reading_time(timeout)

    async def main() -> None:
        async with dht_client(await resolve(addrs), timeout=timeout) as dht:
            if not watch:
                adverts = await with_timeout(
                    fetch_adverts(dht, task, timeout=read), timeout, "group lookup"
                )
                emit_json(adverts) if as_json else console.print(groups_table(adverts))
                return
            memory = ListingMemory()  # a shard read cut short shows what the last reads found
            with contextlib.ExitStack() as stack:
                live = None if as_json else stack.enter_context(Live(console=console))
                for n in itertools.count(1) if count == 0 else range(1, count + 1):
                    if n > 1:
                        await asyncio.sleep(interval)
                    try:
                        adverts = await with_timeout(
                            fetch_adverts(dht, task, timeout=read, memory=memory),
                            timeout,
                            "lookup",
                        )
                    except NetworkError as exc:  # watching goes on through a bad moment
                        click.echo(f"lookup failed: {exc}", err=True)
                        continue
                    if live is None:
                        emit_json(adverts)
                    else:
                        live.update(groups_table(adverts))

    run_async(main())


def presence_rows(rosters: list[tuple[GroupAdvert, list[Record]]]) -> list[dict[str, Any]]:
    """One row per node, from each group's presence records: a node that moved between groups
    has records under both roster keys until the old one expires; its newest one counts."""
    newest: dict[bytes, tuple[GroupAdvert, Record]] = {}
    for advert, records in rosters:
        for r in records:
            if r.signer not in newest or r.rank > newest[r.signer][1].rank:
                newest[r.signer] = (advert, r)
    return [_presence_row(advert, r) for advert, r in newest.values()]


def _presence_row(advert: GroupAdvert, record: Record) -> dict[str, Any]:
    beat = cast("HeartbeatBody", record.body)  # a roster topic takes heartbeats only
    return {
        "node_id": node_id_for(record.signer).hex(),
        "group": advert.name,
        "group_id": advert.group_id,
        "role": beat.role,
        "round": beat.round,
        "addr": f"{beat.addr[0]}:{beat.addr[1]}",
        "app_errors": beat.app_errors,
        # its own word (informational); None from a node of a version that did not say
        "bytes_in": beat.bytes_in if isinstance(beat.bytes_in, int) else None,
        "bytes_out": beat.bytes_out if isinstance(beat.bytes_out, int) else None,
    }


@click.command()
@bootstrap_option
@peers_file_option
@click.option("--json", "as_json", is_flag=True)
@click.option("--timeout", default=10.0, show_default=True, type=FiniteFloatRange(0.1))
def nodes(
    bootstrap: tuple[str, ...], peers_file: Path | None, as_json: bool, timeout: float
) -> None:
    """List nodes with their group, role and traffic (from their signed heartbeats; the
    bytes in and out are each node's own report)."""
    from rich.console import Console

    from ..dht import fetch_adverts
    from ..node import dht_client
    from ..records import record_key, roster_topic
    from .render import nodes_table

    addrs = bootstrap_addresses(bootstrap, peers_file, required=True)

    read = reading_time(timeout)

    async def main() -> list[dict[str, Any]]:
        async with dht_client(await resolve(addrs), timeout=timeout) as dht:
            adverts = await with_timeout(fetch_adverts(dht, timeout=read), timeout, "group lookup")
            rosters = await with_timeout(
                asyncio.gather(
                    *(dht.get_records(record_key(roster_topic(a.group_id))) for a in adverts)
                ),
                timeout,
                "roster lookup",
            )
        rows = presence_rows(list(zip(adverts, rosters, strict=True)))
        return sorted(rows, key=lambda row: (row["group"], row["role"] != "leader", row["node_id"]))

    rows = run_async(main())
    if as_json:
        click.echo(json.dumps(rows))
    else:
        Console().print(nodes_table(rows))


@click.command("id")
@data_dir_option
@click.option("--json", "as_json", is_flag=True)
def id_(data_dir: Path, as_json: bool) -> None:
    """Show this node's id and public key (creating the key on first use)."""
    identity = Identity.load_or_create(data_dir)
    info = {
        "node_id": identity.node_id.hex(),
        "public_key": identity.public_key.hex(),
        "data_dir": str(data_dir),
    }
    if as_json:
        click.echo(json.dumps(info))
    else:
        for key, value in info.items():
            click.echo(f"{key:<11} {value}")


@click.command()
@click.option("--group", "group_ref", required=True, help="The group's id (or its unique prefix).")
@click.option(
    "--node-key",
    required=True,
    help="The invited node's public key (hex), as `mycelium-p2p id` prints it.",
)
@click.option(
    "--ttl",
    default=86400.0,
    show_default=True,
    type=FiniteFloatRange(1),
    help="Seconds the invite stays valid.",
)
@data_dir_option
def invite(group_ref: str, node_key: str, ttl: float, data_dir: Path) -> None:
    """Issue an invite into an invite-only group this node founded (only a group's founder
    invites), signed by this node's key."""
    from ..group.invite import issue_invite
    from ..records.charter import GroupCharter

    try:
        member_key = bytes.fromhex(node_key)
    except ValueError:
        raise click.BadParameter("not hex", param_hint="--node-key") from None
    if len(member_key) != 32:
        raise click.BadParameter("a node key is 64 hex digits", param_hint="--node-key")
    charters = sorted((data_dir / "groups").glob(f"{group_ref}*.charter"))
    if len(charters) != 1:
        known = ", ".join(p.stem for p in sorted((data_dir / "groups").glob("*.charter")))
        reason = "matches several groups" if charters else "is not a group this node belongs to"
        raise click.ClickException(f"--group {group_ref} {reason} (known here: {known or 'none'})")
    identity = Identity.load(data_dir / KEY_FILE)
    group_id = charters[0].stem
    founder = GroupCharter.verify(charters[0].read_bytes(), group_id).founder
    if founder != identity.public_key:
        raise click.ClickException(
            f"only the founder of group {group_id} can invite (its founder is "
            f"{founder.hex()[:16]}…, this node is {identity.public_key.hex()[:16]}…)"
        )
    click.echo(issue_invite(identity, group_id, member_key, now=time.time(), ttl=ttl))
