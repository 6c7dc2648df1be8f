package local

import "syscall"

const sigUSR1 = syscall.SIGUSR1

// backends lists the registries the end-to-end suite runs against.
func backends() []backend { return []backend{builtin()} }
