"""A deployment's files are the user's alone: agents' checkpoints hold their settings
(SNMPv3 keys among them), stores hold the activity, logs name agents and addresses."""

import stat


def test_state_stores_and_logs_are_private(cluster):
    cluster.create("h1", "echo", "modes-echo", note="TOPSECRET-authkey")
    cluster.ref("modes-echo").query("echo", payload=1)
    home = cluster.settings.home
    db = home / "hosts" / "h1" / "host.db"
    cluster.wait(db.exists, timeout=15)
    files = [db, *(home / "logs").glob("*.log"), *home.glob("*.db")]
    folders = [home / "hosts", home / "hosts" / "h1", home / "logs"]
    assert len(files) >= 4  # the host's store, the broker's node list, one log per process
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for path in folders:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
