"""Files: writing them atomically (:mod:`.atomic`), reading checkpoints as Ultralytics would (:mod:`.checkpoints`)."""
