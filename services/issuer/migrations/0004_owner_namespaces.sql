-- Quotas count each owner in its own namespace: a jobmanager identity's tokens never count
-- against the user of the same name, nor the user's against it (docs/authorization.md).
ALTER TABLE owner_usage ADD COLUMN namespace text NOT NULL DEFAULT 'user';
ALTER TABLE owner_usage DROP CONSTRAINT owner_usage_pkey;
ALTER TABLE owner_usage ADD PRIMARY KEY (tenant, subject, namespace);
-- The user bounds may have counted jobmanager tokens: still upper bounds, as they must be.
-- Jobmanager identities start from their true count.
INSERT INTO owner_usage (tenant, subject, namespace, issued)
SELECT tenant, subject, 'jobmanager', count(*) FROM tokens
WHERE kind = 'jobmanager' AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
GROUP BY tenant, subject;
