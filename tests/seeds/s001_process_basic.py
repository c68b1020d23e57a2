# seed 001: "基本接口使用" -- create a Process, start it, join it (import changed only)
# ruff: noqa  -- kept as the notes wrote it (one-line imports, % formats, fullwidth punctuation)
import multitask as mp


# 编写进程函数
def fun():
    print('ddd')


# 创建进程对象
p = mp.Process(target=fun)
# 启动进程
p.start()
# 回收进程
p.join()
print('name:', p.name, 'exitcode:', p.exitcode, 'alive:', p.is_alive())
