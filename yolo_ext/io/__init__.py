"""Files: writing them atomically (:mod:`.atomic`) and reading checkpoints as Ultralytics would (:mod:`.checkpoints`)."""
