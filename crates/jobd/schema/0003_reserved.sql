-- jobd schema, version 3: nothing of the queue's own.  The queue file holds
-- only the queue; a library's tables (the built-in handlers' analytics cache)
-- come with that library's migrations, applied through
-- `Store::migrate_extension`.  Files written before keep their table: the
-- library's first migration adopts it.
SELECT 1;
