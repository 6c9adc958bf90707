CREATE TABLE `device` (`id` text,`name` text,`description` text,`state` text,`last_online` text,PRIMARY KEY (`id`));
CREATE TABLE `device_attr` (`id` integer PRIMARY KEY AUTOINCREMENT,`deviceid` text,`name` text,`description` text,`value` text,`optional` numeric,`attr_type` text,`metadata` text);
CREATE TABLE sqlite_sequence(name,seq);
CREATE TABLE `device_twin` (`id` integer PRIMARY KEY AUTOINCREMENT,`deviceid` text,`name` text,`description` text,`expected` text,`actual` text,`expected_meta` text,`actual_meta` text,`expected_version` text,`actual_version` text,`optional` numeric,`attr_type` text,`metadata` text);
CREATE TABLE `sub_topics` (`topic` text,PRIMARY KEY (`topic`));
CREATE TABLE `meta` (`key` text,`type` text,`value` text,PRIMARY KEY (`key`));
CREATE TABLE `meta_v2` (`key` text,`group_version_resource` text,`namespace` text,`name` text,`resource_version` integer,`value` text,PRIMARY KEY (`key`));
CREATE TABLE `target_urls` (`url` text,PRIMARY KEY (`url`));
