DROP TABLE IF EXISTS crm_conversions;
CREATE TABLE crm_conversions (
  id BIGINT PRIMARY KEY,
  kind TEXT NOT NULL,
  created_at TIMESTAMP,
  customer_id TEXT,
  email TEXT,
  phone TEXT,
  first_name TEXT,
  last_name TEXT,
  country TEXT,
  value NUMERIC(12, 2),
  currency TEXT,
  click_id TEXT
);
CREATE INDEX crm_conversions_created_at ON crm_conversions (created_at);
DROP TABLE IF EXISTS store_transactions;
CREATE TABLE store_transactions (
  transaction_id BIGINT PRIMARY KEY,
  store_id TEXT NOT NULL,
  purchased_at TIMESTAMP,
  loyalty_id TEXT,
  email TEXT,
  phone TEXT,
  first_name TEXT,
  last_name TEXT,
  country TEXT,
  total NUMERIC(12, 2),
  currency TEXT,
  items TEXT
);
CREATE INDEX store_transactions_purchased_at ON store_transactions (purchased_at);
