-- The tables made after an admin's grants (ON ALL TABLES, run once when the store was set up)
-- were granted to the roles that may read the jobs, and not to the admins: on such a store an
-- admin role that does not own them could not cordon (0007), nor a scheduler running as one
-- keep usage (0008). Every role that may delete jobs (an admin's) may write them.
DO $$
DECLARE
    admin TEXT;
BEGIN
    FOR admin IN SELECT DISTINCT r.rolname FROM pg_class c, aclexplode(c.relacl) a
                 JOIN pg_roles r ON r.oid = a.grantee
                 WHERE c.oid = 'jobs'::regclass AND a.privilege_type = 'DELETE' LOOP
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON cordons, usage, gpu_time TO %I',
                       admin);
    END LOOP;
END
$$
