"""An incident's timeline read from the journal, and its evidence report with a proof bundle.

The report (``"format": "keylife-incident-report/1"``) holds the incident as projected, its
timeline, and ``proof_bundle``: a ``keylife-proof-bundle/1`` (``keylife.journal.proofs``) with every
cited entry and its inclusion proof against ONE signed checkpoint. An auditor checks the bundle
offline with the journal's verifier key (``keylife journal check-proof``); the timeline is a
rendering of the same entries, so what the report says is what the bundle proves.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from keylife.journal.note import parse
from keylife.journal.proofs import BUNDLE_FORMAT, b64
from keylife.journal.reader import get_entries
from keylife.journal.writer import Entry, Journal

REPORT_FORMAT = "keylife-incident-report/1"


def summary(event: dict[str, Any]) -> str:
    """One line saying what an entry did, for the timeline."""
    kind = event["type"]
    details = event.get("details") or {}
    if kind == "incident":
        action = details.get("action")
        text = {
            "opened": f"opened ({details.get('severity')}, {details.get('source')}): {details.get('title')}",
            "status": f"status {details.get('from')} -> {details.get('status')}",
            "assigned": f"assigned to {details.get('assignee')}",
            "note": "note",
            "linked": f"linked keys {details.get('keys') or []} nodes {details.get('nodes') or []}",
            "alert": f"alert {details.get('alert')} {details.get('alert_status')}",
        }.get(str(action), str(action))
    elif kind in ("lockdown", "bulk_operation"):
        text = f"{kind} {details.get('phase', '')}".strip()
    else:
        text = kind
    reason = event.get("reason")
    return f"{text}: {reason}" if reason else text


def timeline(journal: Journal, seqs: list[int]) -> list[dict[str, Any]]:
    return [_item(e) for e in get_entries(journal, seqs)]


def _item(entry: Entry) -> dict[str, Any]:
    ev = entry.event
    return {"seq": entry.seq, "time": ev["occurred_at"], "observed_at": entry.observed_at, "type": ev["type"],
            "actor": ev.get("actor"), "key_id": ev.get("key_id"), "node": ev.get("node"),
            "summary": summary(ev)}  # fmt: skip


def covering_checkpoint(journal: Journal, seq: int, wait: float = 10.0) -> str:
    """The latest signed checkpoint once it covers ``seq`` (the journal signs one at least every
    second while entries are unsigned); ValueError after ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        cp = journal.last_checkpoint
        if cp is not None and cp.size > seq:
            return cp.render()
        if time.monotonic() > deadline:
            raise ValueError(f"no signed checkpoint covers entry {seq} yet; retry in a few seconds")
        time.sleep(0.05)


def proof_bundle(journal: Journal, seqs: list[int], note: str) -> dict[str, Any]:
    """``keylife-proof-bundle/1`` of ``seqs`` against the checkpoint ``note`` (live tree, under the journal lock)."""
    cp = parse(note)
    entries = []
    with journal.lock:  # the writer grows the tree under this lock
        tree = journal.tree
        if tree.root(cp.size) != cp.hash:
            raise ValueError(f"the Merkle root at size {cp.size} does not match the checkpoint: run keylife verify")
        for seq in sorted(set(seqs)):
            gone = tree.body_gone(seq)
            if gone:
                raise ValueError(gone)
            (line,) = tree.lines(seq, 1)
            proof = [b64(h) for h in tree.inclusion(seq, cp.size)]
            entries.append({"seq": seq, "entry": line.decode(), "proof": proof})
    return {"format": BUNDLE_FORMAT, "origin": cp.origin, "checkpoint": note, "key_id": None, "entries": entries}


def report(journal: Journal, incident: dict[str, Any], generated_by: str) -> dict[str, Any]:
    seqs = incident.pop("timeline_seqs")
    note = covering_checkpoint(journal, max(seqs)) if seqs else ""
    bundle = proof_bundle(journal, seqs, note) if seqs else None
    items = []
    for item in (bundle or {}).get("entries", []):
        value = orjson.loads(item["entry"])
        items.append(_item(Entry(value["seq"], value.get("observed_at", ""), value["event"], b"")))
    return {"format": REPORT_FORMAT, "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "generated_by": generated_by, "incident": incident, "timeline": items,
            "proof_bundle": bundle}  # fmt: skip


def markdown(rep: dict[str, Any]) -> str:
    """The human-readable rendering of a report (the JSON stays the evidence)."""
    inc = rep["incident"]
    lines = [f"# Incident {inc['id']}: {inc['title']}", "",
             f"- severity: {inc['severity']}", f"- status: {inc['status']}",
             f"- assignee: {inc.get('assignee') or '-'}", f"- source: {inc['source']}",
             f"- opened: {inc['opened_at']} (journal entry {inc['opened_seq']})",
             f"- mitigated: {inc.get('mitigated_at') or '-'}", f"- resolved: {inc.get('resolved_at') or '-'}",
             f"- closed: {inc.get('closed_at') or '-'}", f"- keys: {', '.join(inc.get('keys') or []) or '-'}",
             f"- nodes: {', '.join(inc.get('nodes') or []) or '-'}", "", "## Timeline", "",
             "| time | seq | type | actor | key | summary |", "|---|---|---|---|---|---|"]  # fmt: skip
    for t in rep["timeline"]:
        cells = [t["time"], str(t["seq"]), t["type"], t.get("actor") or "", t.get("key_id") or "", t["summary"]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    bundle = rep.get("proof_bundle")
    lines += ["", "## Evidence", ""]
    if bundle:
        size = bundle["checkpoint"].splitlines()[1]
        lines += [
            f"Every entry above is in the proof bundle with its inclusion proof against the signed checkpoint "
            f"of origin `{bundle['origin']}` at size {size}. Check it offline with the journal's verifier key:",
            "",
            "    keylife journal check-proof REPORT.proof.json --key verifier.key",
        ]
    else:
        lines.append("No entries cited.")
    lines += ["", f"Generated {rep['generated_at']} by {rep['generated_by']}.", ""]
    return "\n".join(lines)
