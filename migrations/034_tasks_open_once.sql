-- 034_tasks_open_once.sql: one index of a request's open tasks (issue 15).
--
-- tasks_open (status pending or queued) is a subset of tasks_unfinished
-- (pending, queued or running), both on request_id: every query that read the
-- first (a request's pending or queued tasks) is answered by the second, with
-- its running tasks as the only extra entries to skip. A task's insert and its
-- 'queued' update each wrote an entry into both; now one.
DROP INDEX IF EXISTS tasks_open;
