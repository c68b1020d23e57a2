# seed 003: os.fork + os.wait / waitpid (avoiding zombies by hand), next to multitask
# ruff: noqa  -- kept as the notes wrote it (one-line imports, % formats, fullwidth punctuation)
import os
import sys
import multitask as mp

parent = os.getpid()
pid = os.fork()
if pid < 0:
    print("Create process failed")
elif pid == 0:
    print("child: ppid matches", os.getppid() == parent, mp.current_process().name)
    os._exit(3)
else:
    p, status = os.wait()
    print("parent reaped", p == pid, "status", os.WEXITSTATUS(status))

pid = os.fork()
if pid == 0:
    sys.exit(2)
p, status = os.waitpid(pid, 0)
print("waitpid", p == pid, os.waitstatus_to_exitcode(status))
