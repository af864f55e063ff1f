// Initiates the replica set of docker-compose.ha.yml once; later runs find it initiated and
// only wait for a primary, so `docker compose up` may run this as often as it likes.
const members = ["mongodb-1:27017", "mongodb-2:27017", "mongodb-3:27017"];
try {
  rs.status();
} catch (e) {
  if (e.codeName !== "NotYetInitialized") throw e;
  rs.initiate({ _id: "rs0", members: members.map((host, i) => ({ _id: i, host })) });
}
for (let i = 0; i < 60 && !db.hello().isWritablePrimary && !db.hello().primary; i++) sleep(1000);
if (!db.hello().primary) throw new Error("no primary after 60 s");
print("replica set rs0: primary " + db.hello().primary);
