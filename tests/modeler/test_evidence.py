"""Connection evidence read from files: the socket log's processes matched to their objects."""

from modeler import evidence

SOCKET_LOG = "time,pid,name,local,remote,state,direction,uid\n"


def test_a_process_name_with_space_comma_or_slash_matches_its_object(tmp_path):
    """The probe names objects with safe_name ("my srv" -> my_srv), the socket log keeps
    the raw name: both must name the same process, or its connections vanish."""
    log = tmp_path / "c.csv"
    log.write_text(SOCKET_LOG
                   + '1.0,10,my srv,127.0.0.1:5000,,LISTEN,listen,0\n'
                   + '1.0,11,"a,b/c",127.0.0.1:40000,127.0.0.1:5000,ESTABLISHED,out,0\n'
                   + '1.0,12,plain,127.0.0.1:40001,127.0.0.1:5000,ESTABLISHED,out,0\n')
    objects = ["h/proc/my_srv/10", "h/proc/a_b_c/11", "h/proc/plain/12"]
    assert evidence.read_connections(log, objects) == {("h/proc/a_b_c/11", "h/proc/my_srv/10"): 1.0,
                                                       ("h/proc/plain/12", "h/proc/my_srv/10"): 1.0}
