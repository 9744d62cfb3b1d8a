-- The loop item whose instance reads an input (0-based), for a task whose loop items are known
-- and whose input names the item (`shard-{{item}}.bin` listed once per item); NULL for an
-- input every instance reads, and for outputs.
ALTER TABLE data_has_task ADD COLUMN item INTEGER CHECK (item >= 0);
ALTER TABLE task_has_directory ADD COLUMN item INTEGER CHECK (item >= 0);
ALTER TABLE task_unlinked_artifact ADD COLUMN item INTEGER CHECK (item >= 0);
