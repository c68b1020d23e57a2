"""multitask._core._mainfn: ``__main__`` functions sent by value live in the worker's ``__main__``.

The user-visible promise: a script whose ``initializer`` sets a global that its task function
reads works as under the stdlib, for every start method, with or without a thread alive (the
fork helper).  Before, the task read its own private copy of the globals (``None``) under spawn
and forkserver, and a threaded fork program's pool broke (the helper lacked the initializer).
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
import types

import pytest

from multitask._core import _mainfn

CODE = """
state = None
def keep(value):
    global state
    state = value
def helper():
    return state
def use(x):
    return (helper(), x)
"""


def fake_main(code: str = "") -> types.ModuleType:
    module = types.ModuleType("__main__")
    exec(compile(code, "<script>", "exec"), vars(module))
    return module


def test_functions_rebuilt_by_value_share_the_receivers_main_namespace(monkeypatch):
    sender = fake_main(CODE)
    keep = pickle.dumps(_mainfn.MainFunction(sender.keep))
    use = pickle.dumps(_mainfn.MainFunction(sender.use))
    receiver = fake_main()
    monkeypatch.setitem(sys.modules, "__main__", receiver)
    rebuilt_keep = pickle.loads(keep)
    rebuilt_keep("set")
    rebuilt_use = pickle.loads(use)
    assert rebuilt_use(1) == ("set", 1)   # and through a helper function it carried
    assert rebuilt_use.__globals__ is vars(receiver)
    assert receiver.state == "set" and receiver.use is rebuilt_use


def test_the_receivers_own_function_of_the_same_code_is_used(monkeypatch):
    sender = fake_main(CODE)
    data = pickle.dumps(_mainfn.MainFunction(sender.use))
    receiver = fake_main(CODE)   # a spawn worker's re-import of the script
    monkeypatch.setitem(sys.modules, "__main__", receiver)
    assert pickle.loads(data) is receiver.use


def test_a_name_the_receiver_binds_to_other_code_is_not_taken(monkeypatch):
    sender = fake_main(CODE)
    data = pickle.dumps(_mainfn.MainFunction(sender.use))
    receiver = fake_main("state = 'mine'\ndef use(x):\n    return 'other'\n")
    monkeypatch.setitem(sys.modules, "__main__", receiver)
    fn = pickle.loads(data)
    assert fn is not receiver.use and receiver.use(0) == "other"
    assert fn(2) == ("mine", 2)   # the receiver's value of a global wins over the one carried


def test_only_main_functions_the_receiver_lacks_want_a_stand_in():
    sender = fake_main(CODE)
    assert _mainfn.wants_stand_in(sender.use, {})
    assert not _mainfn.wants_stand_in(sender.use, {"use": sender.use})
    assert not _mainfn.wants_stand_in(textwrap.dedent, {})
    assert _mainfn.MainFunction(sender.use)(3) == (None, 3)


SCRIPT = """
import sys, threading
import multitask as mp
from multitask import futures

state = None

def keep(value):
    global state
    state = value

def use(x):
    return (state, x)

if __name__ == "__main__":
    method, thread = sys.argv[1], sys.argv[2] == "thread"
    if thread:   # a foreign thread: the fork start goes through the fork helper
        threading.Thread(target=threading.Event().wait, daemon=True).start()
    with mp.get_context(method).Pool(2, initializer=keep, initargs=("set",)) as p:
        print("pool", p.map(use, range(3)))
    with futures.ProcessPoolExecutor(2, mp_context=mp.get_context(method), initializer=keep,
                                     initargs=("set",)) as ex:
        print("executor", list(ex.map(use, range(3))))
"""


@pytest.mark.parametrize("thread", ["no-thread", "thread"])
def test_a_scripts_initializer_sets_the_globals_its_tasks_read(tmp_path, start_method, thread):
    script = tmp_path / "prog.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(script), start_method, thread],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    expected = "[('set', 0), ('set', 1), ('set', 2)]"
    assert proc.stdout.splitlines() == [f"pool {expected}", f"executor {expected}"], proc.stderr
