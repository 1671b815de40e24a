// The three kinds of protected resources (guide 1.1) and how the console names them.
export const KINDS = {
  server: {
    key: "server", path: "servers", title: "Cloud Server Backups", objectType: "server",
    rtype: "OS::Nova::Server", inventory: "servers", icon: "server",
    noun: "server", nouns: "servers", Noun: "Server", Nouns: "Servers", vaultNoun: "Server Backup Vault",
  },
  disk: {
    key: "disk", path: "disks", title: "Cloud Disk Backups", objectType: "disk",
    rtype: "OS::Cinder::Volume", inventory: "disks", icon: "disk",
    noun: "disk", nouns: "disks", Noun: "Disk", Nouns: "Disks", vaultNoun: "Disk Backup Vault",
  },
  turbo: {
    key: "turbo", path: "sfs-turbo", title: "SFS Turbo Backups", objectType: "turbo",
    rtype: "OS::Sfs::Turbo", inventory: "file-systems", icon: "folder",
    noun: "file system", nouns: "file systems", Noun: "File System", Nouns: "File Systems",
    vaultNoun: "SFS Turbo Backup Vault",
  },
};

export const byObjectType = (t) => Object.values(KINDS).find((k) => k.objectType === t) || KINDS.disk;
export const byResourceType = (t) => Object.values(KINDS).find((k) => k.rtype === t) || KINDS.disk;
