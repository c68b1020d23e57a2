# seed 004: 进程池中的进程通信 -- Manager().Queue() handed to Pool workers
# ruff: noqa  -- kept as the notes wrote it (one-line imports, % formats, fullwidth punctuation)
from multitask import Manager, Pool
import os


def reader(q):
    print("reader启动(%s),父进程为(%s)" % (os.getpid(), os.getppid()), flush=True)
    for i in range(q.qsize()):
        print("reader从Queue获取到消息：%s" % q.get(True), flush=True)


def writer(q):
    print("writer启动(%s),父进程为(%s)" % (os.getpid(), os.getppid()), flush=True)
    for i in "itcast":
        q.put(i)


if __name__ == "__main__":
    print("(%s) start" % os.getpid())
    q = Manager().Queue()  # 使用Manager中的Queue
    po = Pool()
    po.apply(writer, (q,))
    po.apply(reader, (q,))
    po.close()
    po.join()
    print("(%s) End" % os.getpid())
