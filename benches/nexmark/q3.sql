-- Nexmark q3: local item suggestion (auction joined with its seller).
CREATE STREAM q3 AS
SELECT p.name, p.city, p.state, a.id
FROM auction a INNER JOIN person p ON a.seller = p.id
WHERE a.category = 10 AND (p.state = 'OR' OR p.state = 'ID' OR p.state = 'CA')
INTO nowhere
WITH ('auction.type' = 'file_source', 'auction.path' = '${NEXMARK_DIR:-target/nexmark}/auction.${NEXMARK_FORMAT:-parquet}', 'person.type' = 'file_source', 'person.path' = '${NEXMARK_DIR:-target/nexmark}/person.${NEXMARK_FORMAT:-parquet}', 'nowhere.type' = 'blackhole');
