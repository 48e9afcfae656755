-- Nexmark q3: local item suggestion (auction joined with its seller). The nexmark crate
-- writes states in lower case (Flink's generator: upper case).
CREATE STREAM q3 AS
SELECT p.name, p.city, p.state, a.id
FROM auction a INNER JOIN person p ON a.seller = p.id
WHERE a.category = 10 AND (p.state = 'or' OR p.state = 'id' OR p.state = 'ca')
INTO nowhere
WITH ('auction.type' = 'file_source', 'auction.path' = '${NEXMARK_DIR:-target/nexmark}/auction.${NEXMARK_FORMAT:-parquet}', 'person.type' = 'file_source', 'person.path' = '${NEXMARK_DIR:-target/nexmark}/person.${NEXMARK_FORMAT:-parquet}', 'nowhere.type' = 'blackhole');
