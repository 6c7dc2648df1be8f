// Package zkstate is the contract every switchyard part agrees on in
// ZooKeeper: the node paths, the color type, the data of instance and
// election nodes, the switch record, ACLs and login, and the three calls a
// client of a switch needs: RequestSwitch, WaitSwitch and ReadView. It
// imports no other switchyard package but the registry's types.
package zkstate
