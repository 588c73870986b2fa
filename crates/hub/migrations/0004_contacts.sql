-- Contact hashes for the stores' staff search (issue 17): hex SHA-256 of the normalised phone
-- number / e-mail address (loyalty_core::contact). Head office's admin API hashes what it is
-- given and stores only the hash; the clear values are in no table. Erasure clears them.
ALTER TABLE customers ADD COLUMN phone_hash text, ADD COLUMN email_hash text;
