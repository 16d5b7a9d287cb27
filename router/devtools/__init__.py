"""Development harness: the replay cloud, the offline demo and the demo's data slices. Top layer:
may import ``training``; nothing below imports it."""
