-- The app's MariaDB user (created by the image from MARIADB_USER) also owns the result store.
CREATE DATABASE IF NOT EXISTS tunescout_results;
GRANT ALL PRIVILEGES ON tunescout_results.* TO 'tunescout'@'%';
