# seed 004: Queue(3) -- full(), put with timeout, put_nowait, qsize, get_nowait (timeout 2 -> 0.1)
# ruff: noqa  -- kept as the notes wrote it (one-line imports, % formats, fullwidth punctuation)
from multitask import Queue

q = Queue(3)  # 初始化一个Queue对象，最多可接收三条put消息
q.put('消息1')
q.put('消息2')
print(q.full())  # False
q.put('消息3')
print(q.full())  # True

# 因为消息列队已满，下面的try都会抛出异常
try:
    q.put('消息4', True, 0.1)
except Exception:
    print('消息队列已满，现有消息数量：%s' % q.qsize())

try:
    q.put_nowait('消息4')
except Exception:
    print('消息列队已满，现有消息数量：%s' % q.qsize())

# 推荐的方式，先判断消息列队是否已满，再写入
if not q.full():
    q.put_nowait('消息4')

# 读取消息时，先判断消息列队是否为空，再读取
if not q.empty():
    for i in range(q.qsize()):
        print(q.get_nowait())
