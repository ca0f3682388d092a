-- Deployment records as provisioning jobs: each names the execution that runs its current attempt
-- and counts its attempts, and a job replaced before it started is SUPERSEDED, a status a busway
-- before this step cannot read. The records written before it ran their first attempt under an
-- execution they did not name.
UPDATE deployments SET doc = json_set(doc, '$.attempt', 1, '$.execution', NULL)
    WHERE json_type(doc, '$.attempt') IS NULL;
