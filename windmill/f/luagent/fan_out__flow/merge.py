def main(replies: list[dict]):
    """replies: luagent's execute replies, one per branch (greet, review, summarize)."""
    greet, review, summary = replies
    return {
        "greeting": greet["result"]["message"],
        "words": review["result"]["words"],
        "short_enough": review["result"]["ok"],
        "summary": summary["result"]["summary"],
        "execution_ids": [r["execution_id"] for r in replies],
        "agents_ms": sum(r["duration_ms"] for r in replies),
    }
