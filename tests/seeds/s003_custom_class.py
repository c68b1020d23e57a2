# seed 003: 自定义进程类 -- subclass Process, own __init__ via super(), override run()
# ruff: noqa  -- kept as the notes wrote it (one-line imports, % formats, fullwidth punctuation)
from multitask import Process
import os


class MyProcess(Process):
    def __init__(self, value):
        self.value = value
        super().__init__()

    def run(self):
        print("run", self.value, self.name.startswith("MyProcess-"), os.getpid() == self.pid)


if __name__ == "__main__":
    ps = [MyProcess(i) for i in range(3)]
    for p in ps:
        p.start()
        p.join()
    print([p.exitcode for p in ps], [p.name.split("-")[0] for p in ps])
    d = MyProcess("daemon")
    d.daemon = True  # 要在start前设置
    d.start()
    d.join()
    print("daemon", d.daemon)
