from trietcd.server.alarms import AlarmStore

NOSPACE, CORRUPT = 1, 2


def test_activate_once_then_list_sorted_and_deactivate():
    s = AlarmStore()
    assert s.activate(5, NOSPACE) == [(5, NOSPACE)]
    # Observed from etcd 3.5.1: a repeated ACTIVATE answers with the alarm again.
    assert s.activate(5, NOSPACE) == [(5, NOSPACE)]
    assert s.activate(2, CORRUPT) == [(2, CORRUPT)]
    assert s.list() == [(2, CORRUPT), (5, NOSPACE)]
    assert s.has(NOSPACE)
    assert s.deactivate(5, NOSPACE) == [(5, NOSPACE)]
    assert s.deactivate(5, NOSPACE) == []
    assert not s.has(NOSPACE)


def test_alarm_none_is_never_active():
    s = AlarmStore()
    assert s.activate(1, 0) == []
    assert s.list() == []
