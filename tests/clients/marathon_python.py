"""Drives Stride with the Python `marathon` client (PyPI 0.13.0), unchanged.

Usage: marathon_python.py http://127.0.0.1:PORT
Exits non-zero on the first failed check and prints what it saw.
"""
import sys
import threading
import time

from marathon import MarathonClient
from marathon.models import MarathonApp, MarathonGroup


def until(what, check, within=60.0):
    deadline = time.time() + within
    last = None
    while time.time() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as e:  # the server may briefly answer with an error mid-change
            last = e
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def main(url):
    c = MarathonClient([url])
    checks = 0

    assert c.ping().strip() in (b"pong", "pong", b'"pong"'), "ping"
    info = c.get_info()
    assert info.name == "marathon", info
    assert c.get_leader(), "a leader"
    checks += 3

    # Events arrive on the SSE stream while the client works.
    seen = []

    def listen():
        try:
            for event in c.event_stream(event_types=["deployment_success", "status_update_event"]):
                seen.append(event)
                if len(seen) > 3:
                    return
        except Exception as e:
            seen.append(e)

    threading.Thread(target=listen, daemon=True).start()
    time.sleep(0.5)

    app = c.create_app("py-app", MarathonApp(cmd="sleep 100000", cpus=0.1, mem=16, instances=2))
    assert app.id == "/py-app", app.id
    until("two running tasks", lambda: c.get_app("py-app").tasks_running == 2)
    until("the deployment to finish", lambda: not c.list_deployments())
    tasks = c.list_tasks("py-app")
    assert len(tasks) == 2 and all(t.state == "TASK_RUNNING" for t in tasks), tasks
    assert all(t.ports for t in tasks), "tasks have host ports"
    apps = c.list_apps()
    assert [a.id for a in apps] == ["/py-app"], apps
    checks += 5

    c.scale_app("py-app", instances=3)
    until("three running tasks", lambda: c.get_app("py-app").tasks_running == 3)
    c.scale_app("py-app", delta=-1)
    until("two running tasks", lambda: c.get_app("py-app").tasks_running == 2 and not c.list_deployments())
    checks += 2

    app = c.get_app("py-app")
    app.cmd = "sleep 200000"
    c.update_app("py-app", app)
    until("the update to roll out", lambda: c.get_app("py-app").cmd == "sleep 200000" and not c.list_deployments())
    versions = c.list_versions("py-app")
    assert len(versions) >= 2, versions
    old = c.get_version("py-app", versions[-1])
    assert old.cmd == "sleep 100000", old.cmd
    checks += 3

    killed = c.kill_tasks("py-app", scale=True)
    until("scaled to zero by the kill", lambda: c.get_app("py-app").instances == 0 and not c.list_deployments())
    assert killed is not None
    checks += 1

    c.create_group(MarathonGroup(id="/py-group", apps=[MarathonApp(id="/py-group/one", cmd="sleep 100000", cpus=0.1, mem=16)]))
    until("the group's app to run", lambda: c.get_app("py-group/one").tasks_running == 1 and not c.list_deployments())
    groups = c.list_groups()
    assert any(g.id == "/py-group" for g in groups), groups
    c.scale_group("py-group", 2)
    until("the group to scale", lambda: c.get_app("py-group/one").tasks_running == 2)
    c.delete_group("py-group", force=True)
    until("the group to go", lambda: all(a.id != "/py-group/one" for a in c.list_apps()))
    checks += 3

    queue = c.list_queue()
    assert isinstance(queue, list)
    metrics = c.get_metrics()
    assert metrics is not None
    checks += 2

    c.delete_app("py-app", force=True)
    until("the app to go", lambda: not c.list_apps())
    checks += 1

    until("events on the stream", lambda: len(seen) >= 2, within=20)
    assert not any(isinstance(e, Exception) for e in seen), seen
    checks += 1

    print(f"marathon-python: {checks} passed, 0 failed")


if __name__ == "__main__":
    main(sys.argv[1])
