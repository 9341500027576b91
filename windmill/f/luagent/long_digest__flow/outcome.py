def main(record: dict, execution_id: str):
    """record: the final execution record luagent POSTed to this flow's resume URL."""
    if record.get("execution_id") != execution_id:
        raise RuntimeError(f"resumed by a record of execution {record.get('execution_id')!r}, "
                           f"not of {execution_id!r}")
    if record.get("status") != "succeeded":
        err = record.get("error") or {}
        raise RuntimeError(f"luagent execution {execution_id} of {record.get('agent')} "
                           f"{record.get('status')}: {err.get('code')}: {err.get('message')}")
    return {
        "execution_id": execution_id,
        "agent": record.get("agent"),
        "result": record.get("result"),
        "duration_ms": record.get("duration_ms"),
    }
