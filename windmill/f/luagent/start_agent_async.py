"""Start a long luagent agent run in async mode; luagent resumes the flow when it is done.

POST /api/v1/agents/{agent}/execute with options {"mode": "async", "callback_url": <resume URL>}:
luagent answers 202 at once ({"execution_id", "agent", "status": "queued", "status_url"}), runs
the agent from its job queue, and POSTs the final execution record to the callback URL (retried
with backoff until a 2xx). In a flow this step carries `suspend` (required_events: 1), so the flow
waits for that POST; the step after it reads the record as `resume`.

`resume_url` is empty inside Windmill: the URL is then this job's own resume URL from
wmill.get_resume_urls(). Pass one to run the script on its own (the tests do, with a local receiver).
"""

from f.luagent.run_agent import agent_path, call, luagent


def resume_url_of_this_job() -> str:
    import wmill  # the Windmill client, present on every Windmill Python worker

    return wmill.get_resume_urls()["resume"]


def main(server: luagent, agent: str, task: dict, context: dict = None, resume_url: str = ""):
    body = {"task": task, "options": {"mode": "async", "callback_url": resume_url or resume_url_of_this_job()}}
    if context:
        body["context"] = context
    return call(server, "POST", agent_path(agent), body)
