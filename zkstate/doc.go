// Package zkstate is the contract every switchyard part agrees on in
// ZooKeeper: the node paths, the color type, the data of instance and
// election nodes, the switch record and its history, ACLs and login, and
// the calls a client of a switch needs: RequestSwitch (with NoteRequest,
// who asked), WaitSwitch or FollowSwitch, ReadView and ReadHistory. It
// imports no other switchyard package but the registry's types.
package zkstate
