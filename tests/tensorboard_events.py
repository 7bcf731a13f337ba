"""Reads TensorBoard event files back for tests: the TFRecord framing (length, its CRC, the
record, its CRC) parsed here, each record an `Event` protocol buffer (the schema tensorboardX
ships), so what a run wrote is checked as TensorBoard would read it."""

import collections
import glob
import os
import struct

from tensorboardX.proto import event_pb2


def read_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...]} over every event file in `logdir`, in file then write order; a
  restart marker (`SessionLog.START` at step s, what a resumed run writes first) drops the points
  read before it at steps >= s, as TensorBoard does."""
  out = collections.defaultdict(list)
  files = sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*")))
  assert files, f"no event file in {logdir}"
  for path in files:
    with open(path, "rb") as f:
      data = f.read()
    at = 0
    while at < len(data):
      (length,) = struct.unpack("<Q", data[at:at + 8])
      record = data[at + 12:at + 12 + length]
      assert len(record) == length, f"{path}: truncated record at byte {at}"
      at += 12 + length + 4
      event = event_pb2.Event.FromString(record)
      if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
        # TensorBoard's rule for a restarted run: points already read at this step or later are dropped
        for tag in out:
          out[tag] = [(step, v) for step, v in out[tag] if step < event.step]
      for value in event.summary.value:
        out[value.tag].append((event.step, value.simple_value))
  return dict(out)
