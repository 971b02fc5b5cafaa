-- jobd schema, version 6: a worker records the job kinds it runs, beside the
-- queues it serves.
--
-- `jobd enqueue`, `jobd schedule add` and the HTTP API refuse a job no
-- worker could run — an unknown queue or kind would otherwise wait forever,
-- or die on its first try.  What they know of is what their own
-- configuration runs, plus what the live workers on the file (other
-- processes, workers built on the library) say here that they serve and run.

ALTER TABLE workers ADD COLUMN kinds TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(kinds));
