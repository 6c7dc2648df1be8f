/*
 * switch.pml: a Promela model of switchyard's switch protocol, checked with
 * Spin. controller/model_test.go runs it under `make test`; README.md in
 * this directory lists the configurations, the counterexamples found and
 * how to read them.
 *
 * One service, four instances: b0 b1 (blue) and g0 g1 (green). The model
 * follows the Go code step by step:
 *
 *   Decide                    controller/plan.go        decide()
 *   reconcile                 controller/reconcile.go   reconcile()
 *   runSwitch, bringUp,       controller/switch.go      runSwitch(), makePhase(),
 *   takeOut, the refusals,                              breakPhase(), workerStep(),
 *   batches, inParallel       controller/batch.go       unserved()
 *   maintain                  controller/reconcile.go   maintain()
 *   instruct, checkTarget     controller/instruct.go    instruct(), preempted()
 *   Plan, upCount,            controller/plan.go        the loops over member slots,
 *   unservedServices                                    countTargetUp(), unserved()
 *   Join (quarantine)         zkstate/join.go           snapshot()
 *   record outcomes           controller/record.go      writeOutcome(), startRecord in runSwitch()
 *   the SDK's instruction     client-sdk/sdk.go         deliver(), apply() in proctype Net;
 *   handler, reportHealth                               report(), recover() in proctype Env
 *   leader epoch              controller/election.go    epoch, grown by Env
 *
 * The environment (proctype Env) does, each within a budget (MAX...), at
 * any step: write /active_color (blue, green, or a value that is not a
 * color); move leadership to another controller with a higher epoch (the
 * old leader stops at once, as lead() cancels its context and checkTarget
 * pauses it while its connection is down, but the instruction it had on
 * its way goes on); flip an instance's health (the SDK then reports DOWN,
 * or UP again); make an instance leave (shutdown or crash) and join again
 * as a new process; plant a node with b0's id under /green (Join then
 * quarantines both b0 nodes) and remove it. Proctype Net delivers the
 * instructions, or loses one (request or answer, MAXLOSS). Green's health
 * at the start is chosen freely. Finally Env may go quiet: nothing more
 * happens but the leader's passes and the network.
 *
 * Abstracted away: more services (the guards are per service) and more
 * instances (two per color give every count that matters: zero, one, two
 * UP); the registry's warm-up (Ready) and self-preservation (members()
 * holding statuses when over half the nodes vanish at once: it never
 * triggers within these budgets, and holding only skips a pass); gateways
 * and waitGateways (they apply registry snapshots in index order, so they
 * see what the registry saw, later); the times of backoff, deadlines and
 * health-check patience (nondeterministic choices instead); a crash is a
 * leave (node and registration vanish together: the registry's lease is
 * not modelled); addresses (an instance that comes back comes back at the
 * same address), signatures, the replay window, the history, the steps in
 * the record. Reading /active_color, the record and the registry is one
 * atomic step; so is the check of the target with the send of an
 * instruction (a write in between commutes with the send).
 *
 * Batches (controller/batch.go). The make phase is a canary of one, then
 * batches that double: with two instances per color that is one at a
 * time (the canary, then the one left), as modelled. The break phase
 * sends the OUTs of a batch at once (breakPhase: two workers, each on its
 * own network slot, each retrying until its instruction lands or its
 * instance leaves), with the last-UP guard read before the batch; a
 * leader change leaves both on their way as late ones; the batch ends
 * only when both workers have (BUG_BATCH_NO_JOIN gives way at once
 * instead). The gateway waits after the canary and before the break
 * phase only delay, as waitGateways does, and are not modelled.
 *
 * Checked. Assertions (switch them off with NOCHECK_A, NOCHECK_C,
 * NOCHECK_D to show that the others still hold) and LTL claims (pan -a -f
 * -N name, with weak fairness):
 *
 *  (a) No instruction takes the last UP instance out: when an instance
 *      applies OUT_OF_SERVICE while UP, another instance is still UP in
 *      the registry. The design promises no more than this: an UP instance
 *      whose own health check fails reports DOWN or leaves by itself, and
 *      the standby color is never brought UP because the active one failed,
 *      so "never zero UP while some instance is healthy" is not a property
 *      of the design; "no instruction removes the last UP instance" is.
 *  (b) ltl converges: if from some point on Env is quiet, /active_color
 *      holds a color X and some member of X is healthy, then from some
 *      point on every healthy member of X is UP and every member of the
 *      other color OUT_OF_SERVICE. ltl converges_recorded also wants the
 *      switch record done with Active X. With QUIET_ON_BAD_VALUE the last
 *      write may be a bad value, X being then the record's goal.
 *  (c) A leader never toggles: whenever a leader decides to switch to,
 *      maintain, acknowledge or retry X, X is the last valid value written
 *      to /active_color, unless no leader has yet acted on that value (sent
 *      an instruction toward it as the target it decided): a value
 *      overwritten before any leader read it cannot be known.
 *  (d) Epoch fencing: an instance (one process of it) never applies an
 *      instruction older than one it applied (with late delivery, where
 *      the SDK's epoch state is modelled); in the default configuration,
 *      the stronger system-wide form: instructions are applied in epoch
 *      order.
 *
 * The default configuration is the design's envelope, the assumptions it
 * needs; each FINDING_ switch lifts one and has a counterexample:
 *
 *  E1  An instruction is applied or lost before its sender gives up on it,
 *      and a deposed leader's instruction before the next leader starts
 *      its first pass (the session timeout separates two leaders, the
 *      HTTP client timeout bounds an instruction), for every instruction of
 *      a batch. FINDING_LATE_DELIVERY lifts it (LATE_NO_TIMEOUT: only for a
 *      deposed leader's).
 *  E2  An UP instance does not report DOWN or leave while the leader is in
 *      the middle of a pass or an instruction is on its way.
 *      FINDING_HEALTH_MIDSWITCH lifts it.
 *  E3  The record a switch starts with (startRecord, written in the
 *      background by the recorder) is in ZooKeeper before the switch's
 *      first instruction. FINDING_RECORD_LAG lifts it.
 *  E4  Under E1 no two instructions meet at an instance; without E1 the
 *      model has the SDK's two steps (check and record the epoch, then
 *      write the registry under regMu), or one with ATOMIC_HANDLER.
 *
 * Mutations of the real algorithm, each expected to produce a
 * counterexample, which shows the checks can fail: BUG_COUNT_QUARANTINED,
 * BUG_BREAK_BEFORE_MAKE, BUG_NO_LAST_UP_GUARD, BUG_NO_EPOCH_CHECK,
 * BUG_TOGGLE, BUG_NO_RETRY, BUG_BATCH_NO_JOIN.
 *
 * A replayed counterexample (spin -T -t) prints "TRAIL <event> <numbers>"
 * lines; model_test.go renders them in words.
 */

#define NI 4                /* instances: b0 b1 (blue) g0 g1 (green) */
#define NM 5                /* member slots: the NI nodes, then a planted node */
#define PSLOT 4

#define BLUE 0
#define GREEN 1
#define NOC 2               /* no color: Go's "", or /active_color not a color */

#define S_NONE 0            /* not registered */
#define S_OUT 1
#define S_UP 2
#define S_DOWN 3

#define P_SWITCHING 0
#define P_DONE 1
#define P_REFUSED 2

#define A_WAIT 0
#define A_REFUSEVALUE 1
#define A_ACK 2
#define A_MAINTAIN 3
#define A_RETRY 4
#define A_SWITCH 5

#define M_FREE 0
#define M_SENT 1
#define M_ACCEPTED 2        /* epoch checked and recorded, registry not written yet */
#define M_OK 3
#define M_ERR 4

#define R_OK 0
#define R_ERR 1
#define R_GONE 2
#define R_PREEMPTED 3

#define DO_NOTHING 0
#define DO_MAINTAIN 1
#define DO_SWITCH 2

/* Budgets of the environment's events. */
#ifndef MAXWRITES
#define MAXWRITES 2         /* writes to /active_color */
#endif
#ifndef MAXLEADERS
#define MAXLEADERS 1        /* leader changes */
#endif
#ifndef MAXHEALTH
#define MAXHEALTH 1         /* health flips, besides the initial choice */
#endif
#ifndef MAXCHURN
#define MAXCHURN 1          /* leaves and joins */
#endif
#ifndef MAXPLANT
#define MAXPLANT 1          /* planted nodes */
#endif
#ifndef MAXLOSS
#define MAXLOSS 1           /* lost instructions or answers */
#endif

#define other(c) (1 - (c))
#define icol(i) ((i) / 2)

/* ---- ZooKeeper ---- */
byte acol = BLUE;           /* /active_color: BLUE, GREEN or NOC (not a color) */
byte azx = 0;               /* its mzxid */
/* /switchyard/switch. Target and From are not modelled: Decide never reads them. */
byte recId = 0;
byte recGoal = BLUE;
byte recActive = BLUE;
byte recPhase = P_DONE;
#ifdef FINDING_RECORD_LAG
bit pend;                   /* the recorder's queued record (startRecord's) */
byte pId, pGoal, pActive;
#endif
byte planted = NI;          /* NI: none; i: a node with i's id under the other color */
byte epoch = 1;             /* the current leader's epoch */
bit armed;                  /* the leader's /active_color watch has fired (c.asked != nil) */

/* ---- instances and the registry ---- */
bit alive[NI];              /* process runs, node announced, registered */
bit healthy[NI];
byte status[NI];            /* registry status */
/* Epoch fencing. Under E1 an instruction of epoch e is applied or lost
 * before any of a later epoch is sent, so the SDK's check can never refuse
 * and its state would only multiply states: it is tracked when late
 * delivery is modelled, and otherwise (d) is checked in its stronger,
 * system-wide form with one ghost. */
#ifdef FINDING_LATE_DELIVERY
#define FENCING
#endif
#ifdef FENCING
byte seen[NI];              /* the SDK's newest accepted epoch */
byte applied[NI];           /* ghost: newest epoch this process applied */
#define forgetEpochs(i) seen[i] = 0; applied[i] = 0
#else
#define forgetEpochs(i) skip
#endif
byte maxApplied;            /* ghost: newest epoch applied anywhere */

/* ---- network: slots 0 and 2 the leader's instructions (a batch of the
 * break phase has two at once), 1 and 3 the same once late (their sender
 * stopped waiting), 4 one its pass abandoned (BUG_BATCH_NO_JOIN only) ---- */
typedef Msg { byte to; byte st; byte ep; byte state };
#define NS 5
#define ORPHAN 4
Msg net[NS];
#define leaderSlot(s) ((s) == 0 || (s) == 2)
#define freeSlot(s) net[s].to = 0; net[s].st = 0; net[s].ep = 0; net[s].state = M_FREE
#define lateFree (net[1].state == M_FREE && net[3].state == M_FREE)

/* ---- ghosts ---- */
byte want = BLUE;           /* the last valid value written to /active_color */
bit wantActed = 1;          /* an instruction toward want was sent since */
bit busy;                   /* the leader is between its snapshot and the end of its pass */
bit quiet;                  /* Env has stopped */
byte writes, leaders, hflips, churn, plants, losses;

#define memb(i) (alive[i] && planted != (i))
/* The SDK's desired status is UP exactly when the registry says UP or DOWN:
 * it sets both at once, and reports DOWN only while it wants UP. */
#define desiredUp(i) (status[i] == S_UP || status[i] == S_DOWN)
#define nUP ((status[0] == S_UP) + (status[1] == S_UP) + (status[2] == S_UP) + (status[3] == S_UP))

/* E2: when an UP instance may go DOWN or leave. */
#ifdef FINDING_HEALTH_MIDSWITCH
#define upMayDrop true
#else
#define upMayDrop (!busy && net[0].state == M_FREE && net[1].state == M_FREE && net[2].state == M_FREE && \
                   net[3].state == M_FREE && net[4].state == M_FREE)
#endif

/* (b) convergence. The goal is /active_color, or while it holds a bad
 * value the switch record's goal (GoalColor), as Decide has it. */
#define goalIs(c) (acol == (c) || (acol == NOC && (recGoal == (c) || (recGoal == NOC && recActive == (c)))))
#define convi(i) (!memb(i) || (goalIs(icol(i)) && (!healthy[i] || status[i] == S_UP)) || \
                  (!goalIs(icol(i)) && status[i] == S_OUT))
#define routed (convi(0) && convi(1) && convi(2) && convi(3))
#define recorded (goalIs(recActive) && recPhase == P_DONE)
#define goalOK ((memb(0) && goalIs(icol(0)) && healthy[0]) || (memb(1) && goalIs(icol(1)) && healthy[1]) || \
                (memb(2) && goalIs(icol(2)) && healthy[2]) || (memb(3) && goalIs(icol(3)) && healthy[3]))

#ifndef NOLTL
ltl converges { (<> [] (quiet && goalOK)) -> (<> [] routed) }
ltl converges_recorded { (<> [] (quiet && goalOK)) -> (<> [] (routed && recorded)) }
#endif

/* ---------------- trail printing ----------------
 * Replaying a counterexample (spin -T -t) prints one "TRAIL <event> <numbers>"
 * line per event; model_test.go renders them in words. pan prints nothing. */

inline pstate() {
	printf("TRAIL state %d %d %d %d %d %d %d %d %d %d %d %d %d\n",
		status[0], status[1], status[2], status[3], healthy[0], healthy[1], healthy[2], healthy[3],
		acol, recId, recGoal, recActive, recPhase)
}

/* ---------------- instances and the network ---------------- */

/* A message that fails: the leader's gets an error answer, a late one vanishes. */
inline fail(s) {
	if
	:: leaderSlot(s) -> net[s].state = M_ERR
	:: else -> freeSlot(s)
	fi
}

/* The SDK writes the registry (SetStatus under regMu) and answers. */
inline apply(s) {
	j = net[s].to;
	if
	:: !alive[j] -> fail(s)       /* the process that accepted it is gone */
	:: else ->
		wasUp = (status[j] == S_UP);
#ifdef FENCING
#ifndef NOCHECK_D
		assert(net[s].ep >= applied[j]);            /* (d), per instance */
#endif
		if
		:: net[s].ep > applied[j] -> applied[j] = net[s].ep
		:: else
		fi;
#endif
#if !defined(FENCING) || defined(CHECK_GLOBAL_EPOCH)
#ifndef NOCHECK_D
		assert(net[s].ep >= maxApplied);            /* (d), system-wide */
#endif
#endif
		if
		:: net[s].ep > maxApplied -> maxApplied = net[s].ep
		:: else
		fi;
		status[j] = net[s].st;
		printf("TRAIL apply %d %d %d %d\n", j, net[s].st, net[s].ep, s); pstate();
#ifndef NOCHECK_A
		assert(!(wasUp && nUP == 0));               /* (a) */
#endif
		wasUp = 0;
		if
		:: leaderSlot(s) ->
			if
			:: net[s].state = M_OK
			:: losses < MAXLOSS -> losses++; net[s].state = M_ERR;  /* answer lost */
				printf("TRAIL lostanswer %d\n", j)
			fi
		:: else -> freeSlot(s)
		fi
	fi
}

/* The SDK's instruction handler: refuses when the process is not there or
 * the leader is older than the newest it accepted; otherwise records the
 * epoch (CompareAndSwap) and then, as a separate step unless ATOMIC_HANDLER,
 * applies. */
inline deliver(s) {
	j = net[s].to;
	if
	:: !alive[j] -> fail(s)
#if defined(FENCING) && !defined(BUG_NO_EPOCH_CHECK)
	:: alive[j] && net[s].ep < seen[j] ->          /* 409: older leader */
		printf("TRAIL refuse %d %d %d\n", j, net[s].ep, seen[j]);
		fail(s)
	:: alive[j] && net[s].ep >= seen[j] ->
#else
	:: alive[j] ->                                 /* any epoch accepted */
#endif
#ifdef FENCING
		seen[j] = (net[s].ep > seen[j] -> net[s].ep : seen[j]);
#endif
#ifdef ATOMIC_HANDLER
		apply(s)
#else
		net[s].state = M_ACCEPTED;
		printf("TRAIL accept %d %d %d\n", j, net[s].st, net[s].ep)
#endif
	fi
}

/* The network, the instances' handlers, and the switch recorder. */
proctype Net() {
	byte j;
	bit wasUp;
end:
	do
	:: atomic { net[0].state == M_SENT -> deliver(0); j = 0 }
	:: atomic { net[1].state == M_SENT -> deliver(1); j = 0 }
	:: atomic { net[2].state == M_SENT -> deliver(2); j = 0 }
	:: atomic { net[3].state == M_SENT -> deliver(3); j = 0 }
#ifdef BUG_BATCH_NO_JOIN
	:: atomic { net[4].state == M_SENT -> deliver(4); j = 0 }
#endif
#ifndef ATOMIC_HANDLER
	:: atomic { net[0].state == M_ACCEPTED -> apply(0); j = 0 }
	:: atomic { net[1].state == M_ACCEPTED -> apply(1); j = 0 }
	:: atomic { net[2].state == M_ACCEPTED -> apply(2); j = 0 }
	:: atomic { net[3].state == M_ACCEPTED -> apply(3); j = 0 }
#ifdef BUG_BATCH_NO_JOIN
	:: atomic { net[4].state == M_ACCEPTED -> apply(4); j = 0 }
#endif
#endif
	:: atomic { losses < MAXLOSS && net[0].state == M_SENT -> losses++; net[0].state = M_ERR;
	            printf("TRAIL lost %d\n", net[0].to) }
	:: atomic { losses < MAXLOSS && net[2].state == M_SENT -> losses++; net[2].state = M_ERR;
	            printf("TRAIL lost %d\n", net[2].to) }
	:: atomic { losses < MAXLOSS && net[1].state == M_SENT -> losses++;
	            printf("TRAIL lostlate %d\n", net[1].to);
	            freeSlot(1) }
	:: atomic { losses < MAXLOSS && net[3].state == M_SENT -> losses++;
	            printf("TRAIL lostlate %d\n", net[3].to);
	            freeSlot(3) }
#ifdef FINDING_RECORD_LAG
	:: atomic { pend -> recId = pId; recGoal = pGoal; recActive = pActive; recPhase = P_SWITCHING;
	                    printf("TRAIL recorder\n");
	                    pend = 0; pId = 0; pGoal = 0; pActive = 0 }
#endif
	od
}

/* The new leader's watch of /active_color fires (lead() stores nil first). */
proctype Watch() {
end:
	do
	:: atomic { !armed -> armed = 1 }
	od
}

/* ---------------- the environment ---------------- */

/* An instance process ends: SDK shutdown (OUT, node deleted, deregistered)
 * or a crash (node and registration vanish with it). A handler of that
 * process that accepted an instruction dies with it. */
inline leave(i) {
	atomic {
		churn < MAXCHURN && alive[i] && (status[i] != S_UP || upMayDrop) ->
		churn++; alive[i] = 0; healthy[i] = 0; status[i] = S_NONE;
		forgetEpochs(i);
		printf("TRAIL leave %d\n", i);
		for (j : 0 .. NS - 1) {
			if
			:: net[j].to == i && net[j].state == M_ACCEPTED -> fail(j)
			:: else
			fi
		}
		j = 0
	}
}

/* A new process with the same id: registers OUT_OF_SERVICE and announces
 * its node, with a fresh SDK that has heard no epoch yet. */
inline join(i) {
	atomic {
		churn < MAXCHURN && !alive[i] ->
		churn++; alive[i] = 1; status[i] = S_OUT; forgetEpochs(i);
		if
		:: healthy[i] = 1
		:: healthy[i] = 0
		fi;
		printf("TRAIL join %d %d\n", i, healthy[i])
	}
}

inline flip(i) {
	atomic { hflips < MAXHEALTH && alive[i] -> hflips++; healthy[i] = !healthy[i];
	         printf("TRAIL health %d %d\n", i, healthy[i]) }
}

/* The SDK's reportHealth: DOWN while failing though wanted UP... */
inline report(i) {
	atomic { alive[i] && desiredUp(i) && !healthy[i] && status[i] == S_UP && upMayDrop -> status[i] = S_DOWN;
	         printf("TRAIL down %d\n", i); pstate() }
}
/* ...and UP again once it passes. */
inline recover(i) {
	atomic { alive[i] && desiredUp(i) && healthy[i] && status[i] == S_DOWN -> status[i] = S_UP;
	         printf("TRAIL upagain %d\n", i) }
}

proctype Env() {
	byte j;                     /* leave()'s loop */
	do
	:: atomic {
		writes < MAXWRITES -> writes++; azx++;
		if
		:: acol = BLUE
		:: acol = GREEN
#ifndef NO_BAD_VALUE
		:: acol = NOC
#endif
		fi;
		if
		:: acol != NOC && acol != want -> want = acol; wantActed = 0
		:: else
		fi;
		printf("TRAIL write %d %d\n", acol, azx)
	   }
	/* Leadership moves: the old leader's session is gone and its pass
	 * stops, but its instructions in flight (two in a batch) go on as late
	 * ones. The new leader's epoch is higher; its watch has not fired. */
	:: atomic {
		leaders < MAXLEADERS && lateFree -> leaders++; epoch++; armed = 0; busy = 0;
		if
		:: net[0].state == M_SENT || net[0].state == M_ACCEPTED ->
			net[1].to = net[0].to; net[1].st = net[0].st; net[1].ep = net[0].ep; net[1].state = net[0].state
		:: else
		fi;
		if
		:: net[2].state == M_SENT || net[2].state == M_ACCEPTED ->
			net[3].to = net[2].to; net[3].st = net[2].st; net[3].ep = net[2].ep; net[3].state = net[2].state
		:: else
		fi;
		freeSlot(0); freeSlot(2);
#ifdef FINDING_RECORD_LAG
		pend = 0; pId = 0; pGoal = 0; pActive = 0;
#endif
		printf("TRAIL leader %d\n", epoch)
	   }
	/* By symmetry within a color, health flips hit b0 and g0 (the first
	 * of their color a pass visits) and churn hits b1 and g1 (the last). */
	:: flip(0)
	:: flip(2)
	:: report(0)
	:: report(1)
	:: report(2)
	:: report(3)
	:: recover(0)
	:: recover(1)
	:: recover(2)
	:: recover(3)
	:: leave(1)
	:: leave(3)
	:: join(1)
	:: join(3)
	/* a node with b0's id under /green (a duplicate of a live id) */
	:: atomic { plants < MAXPLANT && planted == NI -> plants++; planted = 0;
	            printf("TRAIL plant\n") }
	:: atomic { planted != NI -> planted = NI; printf("TRAIL unplant\n") }
#ifndef NOLTL
	/* Quiet, with /active_color holding a color (the task's premise for
	 * (b)); QUIET_ON_BAD_VALUE also allows a bad value, the goal then being
	 * the record's, as Decide has it. */
#ifdef QUIET_ON_BAD_VALUE
	:: atomic { quiet = 1; printf("TRAIL quiet\n") }; break
#else
	:: atomic { acol != NOC -> quiet = 1; printf("TRAIL quiet\n") }; break
#endif
#endif
	od
}

/* ---------------- the controller ---------------- */

/* Decide (controller/plan.go); Ready is always true. */
inline decide() {
	if
	:: oAsked == NOC && oId < oZx -> act = A_REFUSEVALUE; dtgt = NOC; did = oZx
	:: else ->
		if
		:: oAsked != NOC -> dtgt = oAsked; did = oZx
		:: else -> dtgt = (oGoal != NOC -> oGoal : oActive); did = oId
		fi;
		if
		:: dtgt == NOC -> act = A_WAIT
		:: else ->
			if
			:: oActive == dtgt && oPhase != P_SWITCHING ->
				if
				:: oAsked != NOC && oId < oZx -> act = A_ACK
				:: else -> act = A_MAINTAIN; did = oId
				fi
			:: else ->
				if
				:: oPhase == P_REFUSED && oGoal == dtgt && oId >= oZx -> act = A_RETRY; did = oId
				:: else -> act = A_SWITCH
				fi
			fi
		fi
	fi
}

inline observeRecord() {
	oId = recId; oGoal = recGoal; oActive = recActive; oPhase = recPhase
}

/* A record outcome, flushed (finishRecord, refuse, refuseValue, acknowledge). */
inline writeOutcome(wid, wgoal, wactive, wphase) {
	recId = wid; recGoal = wgoal; recActive = wactive; recPhase = wphase;
	printf("TRAIL record %d\n", recPhase); pstate();
#ifdef FINDING_RECORD_LAG
	pend = 0; pId = 0; pGoal = 0; pActive = 0;
#endif
}

/* The instance behind a member slot, its color, whether its node is still
 * there (instruct's Exists check), and the health check (GET health). The
 * planted slot points at the instance whose id it copies. */
#define slotInst(k) ((k) < NI -> (k) : pj)
#define slotCol(k) ((k) < NI -> icol(k) : other(icol(pj)))
#define slotNode(k) ((k) < NI -> alive[k] : planted == pj)
#define slotHealthy(k) (alive[slotInst(k)] && healthy[slotInst(k)])

/* Forget a slot's snapshot once no later step reads it (keeps states few). */
#define forget(k) mem[k] = 0; mst[k] = 0; hset[k] = 0

/* checkTarget: c.asked is the last valid /active_color once the watch fired. */
#define preempted(t) (armed && want != (t))

/* The registry snapshot joined with the instance nodes (zkstate.Join): a
 * node is a member only if it is registered under the color its node is
 * under and its id is not announced under both colors. The planted node
 * copies a live id under the other color: it and the real node are both
 * quarantined. */
inline snapshot() {
	busy = 1;
	pj = (planted != NI -> planted : 0);
	for (k : 0 .. NI - 1) {
#ifdef BUG_COUNT_QUARANTINED
		mem[k] = alive[k];
#else
		mem[k] = alive[k] && planted != k;
#endif
		mst[k] = status[k]
	}
#ifdef BUG_COUNT_QUARANTINED
	/* the planted node taken at its word, with its id's registry status */
	mem[PSLOT] = (planted != NI && alive[pj]);
	mst[PSLOT] = (planted != NI -> status[pj] : S_NONE);
#endif
	k = 0
}

/* instruct (controller/instruct.go): checkTarget, then one signed PUT,
 * retried with backoff; with a limit it may give up on any error (its
 * deadline), without one only once the instance's node is gone. */
inline instruct(itgt, ik, ist, ilim) {
	do
	:: atomic {
		preempted(itgt) -> res = R_PREEMPTED; printf("TRAIL preempted %d\n", myEp)
	   }; break
	:: atomic {
		!preempted(itgt) ->
		net[0].to = slotInst(ik); net[0].st = ist; net[0].ep = myEp; net[0].state = M_SENT;
		printf("TRAIL send %d %d %d %d\n", myEp, ist, net[0].to, itgt);
		if
		:: itgt == want && fromGoal -> wantActed = 1
		:: else
		fi
	   }
		if
		:: atomic {
			(net[0].state == M_OK || net[0].state == M_ERR) ->
			res = (net[0].state == M_OK -> R_OK : R_ERR);
			net[0].to = 0; net[0].st = 0; net[0].ep = 0; net[0].state = M_FREE;
			if
			:: res == R_ERR && !slotNode(ik) -> res = R_GONE
			:: else
			fi
		   }
#if defined(FINDING_LATE_DELIVERY) && !defined(LATE_NO_TIMEOUT)
		/* the HTTP client times out while the instruction is still on its
		 * way or in the handler: it may be applied later */
		:: atomic {
			(net[0].state == M_SENT || net[0].state == M_ACCEPTED) && net[1].state == M_FREE ->
			net[1].to = net[0].to; net[1].st = net[0].st; net[1].ep = net[0].ep; net[1].state = net[0].state;
			net[0].to = 0; net[0].st = 0; net[0].ep = 0; net[0].state = M_FREE;
			printf("TRAIL timeout %d %d\n", myEp, net[1].to);
			res = R_ERR;
			if
			:: !slotNode(ik) -> res = R_GONE
			:: else
			fi
		   }
#endif
		fi;
		if
		:: res == R_OK || res == R_GONE -> break
		:: res == R_ERR && ilim -> break        /* deadline */
		:: res == R_ERR -> skip                 /* retry */
		fi
	od
}

/* maintain (controller/reconcile.go): bring the active color's new
 * instances UP, take the others out, never the last UP one. */
inline maintain(mcol) {
	atomic {
		tUp = 0;
		for (k : 0 .. NM - 1) {
			if
			:: mem[k] && slotCol(k) == mcol && mst[k] == S_UP -> tUp++
			:: else
			fi
		}
		k = 0
	}
	do /* ups */
	:: k < NM ->
		if
		:: mem[k] && slotCol(k) == mcol && mst[k] != S_UP && slotHealthy(k) ->
			instruct(mcol, k, S_UP, 1);
			if
			:: res == R_OK -> tUp++
			:: else
			fi;
			res = 0
		:: else
		fi;
		if
		:: slotCol(k) == mcol -> forget(k)
		:: else
		fi;
		k++
	:: else -> k = 0; break
	od;
	do /* outs */
	:: k < NM ->
		if
#ifdef BUG_NO_LAST_UP_GUARD
		:: mem[k] && slotCol(k) != mcol && mst[k] != S_OUT ->
#else
		:: mem[k] && slotCol(k) != mcol && mst[k] != S_OUT && tUp > 0 ->
#endif
			instruct(mcol, k, S_OUT, 1);
			res = 0
		:: else
		fi;
		forget(k);
		k++
	:: else -> k = 0; break
	od
}

/* The make phase (bringUp): each target instance healthy at the gate and
 * again right before is told to go UP; one that fails is skipped. (The
 * second check is the instance's own, as it takes the instruction, in
 * sdk.go; checking it one step before the instruction, as here, lets
 * health change in between, so the model allows more than the code.) */
inline makePhase() {
	do
	:: k < NM ->
		if
		:: mem[k] && slotCol(k) == dtgt && mst[k] != S_UP && hset[k] && slotHealthy(k) ->
			instruct(dtgt, k, S_UP, 1);
			if
			:: res == R_PREEMPTED -> goto endpass
			:: res == R_OK -> tUp++
			:: else
			fi;
			res = 0
		:: else
		fi;
		if
		:: slotCol(k) == dtgt -> forget(k)
		:: else
		fi;
		k++
	:: else -> k = 0; break
	od
}

/* The break phase (takeOut): the other color goes out in batches (of two
 * here: the batch of MaxBatch covers every instance of a color), each OUT
 * under the last-UP guard, read before the batch, its instructions sent
 * at once, each retried by its own worker (slot 2w) until it lands or the
 * instance leaves. The batch ends once every worker has: inParallel joins
 * them, so no instruction of it is on its way when the pass moves on or
 * gives way. */
#define W_IDLE 0            /* not in the batch, or finished */
#define W_READY 1           /* to check the target and send (again) */
#define W_WAIT 2            /* sent; awaiting the answer */

/* One step of batch worker w: onTarget then one signed PUT, as instruct()
 * without a limit. (A macro, not an inline: it is a set of options.) */
#define workerStep(w) \
	:: atomic { bws[w] == W_READY && preempted(dtgt) -> \
		bws[w] = W_IDLE; bres[w] = R_PREEMPTED; printf("TRAIL preempted %d\n", myEp) } \
	:: atomic { bws[w] == W_READY && !preempted(dtgt) -> \
		net[2*w].to = slotInst(bw[w]); net[2*w].st = S_OUT; net[2*w].ep = myEp; net[2*w].state = M_SENT; \
		printf("TRAIL send %d %d %d %d\n", myEp, S_OUT, net[2*w].to, dtgt); \
		if \
		:: dtgt == want && fromGoal -> wantActed = 1 \
		:: else \
		fi; \
		bws[w] = W_WAIT } \
	:: atomic { bws[w] == W_WAIT && (net[2*w].state == M_OK || net[2*w].state == M_ERR) -> \
		if \
		:: net[2*w].state == M_OK || !slotNode(bw[w]) -> bws[w] = W_IDLE \
		:: else -> bws[w] = W_READY \
		fi; \
		freeSlot(2*w) } \
	workerTimeout(w)

#if defined(FINDING_LATE_DELIVERY) && !defined(LATE_NO_TIMEOUT)
/* the HTTP client times out; the instruction may still be applied later */
#define workerTimeout(w) \
	:: atomic { bws[w] == W_WAIT && (net[2*w].state == M_SENT || net[2*w].state == M_ACCEPTED) && \
	            net[2*w+1].state == M_FREE -> \
		net[2*w+1].to = net[2*w].to; net[2*w+1].st = net[2*w].st; net[2*w+1].ep = net[2*w].ep; \
		net[2*w+1].state = net[2*w].state; \
		freeSlot(2*w); \
		printf("TRAIL timeout %d %d\n", myEp, net[2*w+1].to); \
		if \
		:: !slotNode(bw[w]) -> bws[w] = W_IDLE \
		:: else -> bws[w] = W_READY \
		fi }
#else
#define workerTimeout(w)
#endif

inline breakPhase() {
	do
	:: k < NM ->
		/* the next batch: the next two members to take out, from k on */
		atomic {
			do
			:: k < NM && bws[1] == W_IDLE ->
				if
#ifdef BUG_NO_LAST_UP_GUARD
				:: mem[k] && slotCol(k) != dtgt && mst[k] != S_OUT ->
#else
				:: mem[k] && slotCol(k) != dtgt && mst[k] != S_OUT && tUp > 0 ->
#endif
					if
					:: bws[0] == W_IDLE -> bw[0] = k; bws[0] = W_READY
					:: else -> bw[1] = k; bws[1] = W_READY
					fi
				:: else -> forget(k)
				fi;
				k++
			:: else -> break
			od
		}
		do
		workerStep(0)
		workerStep(1)
#ifdef BUG_BATCH_NO_JOIN
		/* the batch gives way as soon as one worker is preempted: the other's
		 * instruction goes on, and nobody waits for it */
		:: atomic { (bres[0] == R_PREEMPTED || bres[1] == R_PREEMPTED) && net[ORPHAN].state == M_FREE ->
			for (j : 0 .. 1) {
				if
				:: bws[j] == W_WAIT && (net[2*j].state == M_SENT || net[2*j].state == M_ACCEPTED) ->
					net[ORPHAN].to = net[2*j].to; net[ORPHAN].st = net[2*j].st; net[ORPHAN].ep = net[2*j].ep;
					net[ORPHAN].state = net[2*j].state;
					printf("TRAIL orphan %d\n", net[ORPHAN].to)
				:: else
				fi;
				if
				:: bws[j] == W_WAIT -> freeSlot(2*j)
				:: else
				fi;
				bws[j] = W_IDLE
			}
			j = 0 }
#endif
		:: atomic { bws[0] == W_IDLE && bws[1] == W_IDLE ->
			if
			:: bres[0] == R_PREEMPTED || bres[1] == R_PREEMPTED -> res = R_PREEMPTED
			:: else
			fi;
			/* with one in the batch, bw[1] is slot 0, behind k: forgotten already */
			forget(bw[0]); forget(bw[1]); bw[0] = 0; bw[1] = 0; bres[0] = 0; bres[1] = 0 };
			break
		od;
		if
		:: res == R_PREEMPTED -> goto endpass
		:: else
		fi
	:: else -> k = 0; break
	od
}

/* unservedServices: some instance outside the target is UP and tUp is 0. */
inline unserved() {
	res = 0;
	for (k : 0 .. NM - 1) {
		if
		:: mem[k] && slotCol(k) != dtgt && mst[k] == S_UP && tUp == 0 -> res = 1
		:: else
		fi
	}
	k = 0
}

inline countTargetUp() {
	tUp = 0;
	for (k : 0 .. NM - 1) {
		if
		:: mem[k] && slotCol(k) == dtgt && mst[k] == S_UP -> tUp++
		:: else
		fi
	}
	k = 0
}

/* runSwitch (controller/switch.go) toward dtgt, answering write did. */
inline runSwitch() {
	atomic {
		/* startRecord: Goal the target, Active as before */
#ifdef FINDING_RECORD_LAG
		pend = 1; pId = did; pGoal = dtgt; pActive = oActive;
#else
		recId = did; recGoal = dtgt; recActive = oActive; recPhase = P_SWITCHING;
#endif
		/* healthyTargets (patient) */
		for (k : 0 .. NM - 1) {
			hset[k] = mem[k] && slotCol(k) == dtgt && slotHealthy(k)
		}
		k = 0;
		/* checkTarget */
		if
		:: preempted(dtgt) -> goto endpass
		:: else
		fi;
		/* optimistic: the target's UP members plus its healthy ones to bring up */
		countTargetUp();
		for (k : 0 .. NM - 1) {
			if
			:: hset[k] && mst[k] != S_UP -> tUp++
			:: else
			fi
		}
		k = 0;
		unserved();
		if
		:: res -> writeOutcome(did, dtgt, oActive, P_REFUSED); goto endpass
		:: else
		fi;
		countTargetUp()
	}
#ifdef BUG_BREAK_BEFORE_MAKE
	/* the seed's order: out first, counting on what should come up */
	atomic {
		for (k : 0 .. NM - 1) {
			if
			:: hset[k] && mst[k] != S_UP -> tUp++
			:: else
			fi
		}
		k = 0
	}
	breakPhase();
	makePhase();
#else
	makePhase();
	atomic {
		unserved();
		if
		:: res -> writeOutcome(did, dtgt, oActive, P_REFUSED); goto endpass
		:: else
		fi
	}
	breakPhase();
#endif
	/* waitGateways only delays; then the switch is done */
	atomic { writeOutcome(did, dtgt, dtgt, P_DONE) }
}

/* One reconcile pass (controller/reconcile.go). Reading /active_color, the
 * record and the registry is one step. */
inline reconcile() {
	atomic {
#ifndef FINDING_LATE_DELIVERY
		lateFree;                   /* E1 */
#endif
		oAsked = acol; oZx = azx; observeRecord();
		decide();
		if
		:: act == A_REFUSEVALUE ->
			mt = (oGoal != NOC -> oGoal : oActive);     /* prev.GoalColor() */
			writeOutcome(oZx, mt, oActive, P_REFUSED);
			mt = 0;
			observeRecord();
			decide()
		:: else
		fi;
#ifdef BUG_TOGGLE
		/* the seed's new leader toggles the live color */
		if
		:: first && myEp > 1 && act != A_WAIT -> act = A_SWITCH; dtgt = other(oActive); did = oZx
		:: else
		fi;
		first = 0;
#endif
		printf("TRAIL decide %d %d %d %d %d\n", myEp, oAsked, act, dtgt, did);
#ifndef NOCHECK_C
		assert(act < A_ACK || dtgt == want || !wantActed);   /* (c) */
#endif
		snapshot();
		if
		:: act == A_WAIT -> mode = DO_NOTHING
		:: act == A_ACK ->
			writeOutcome(did, dtgt, dtgt, P_DONE);
			mode = DO_MAINTAIN; mt = dtgt
		:: act == A_MAINTAIN -> mode = DO_MAINTAIN; mt = dtgt
		:: act == A_RETRY ->
			/* healthyTargets, not patient */
			res = 0;
			for (k : 0 .. NM - 1) {
				if
				:: mem[k] && slotCol(k) == dtgt && slotHealthy(k) -> res = 1
				:: else
				fi
			}
			k = 0;
#ifdef BUG_NO_RETRY
			res = 0;
#endif
			if
			:: res -> mode = DO_SWITCH
			:: else -> mode = DO_MAINTAIN; mt = oActive; fromGoal = 0
			fi;
			res = 0
		:: act == A_SWITCH -> mode = DO_SWITCH
		fi;
		/* only dtgt (and for a switch did and oActive) are read from here on */
		oAsked = 0; oZx = 0; oId = 0; oGoal = 0; oPhase = 0; act = 0;
		if
		:: mode == DO_MAINTAIN -> dtgt = mt; mt = 0; did = 0; oActive = 0
		:: else
		fi
	}
	if
	:: mode == DO_MAINTAIN -> mode = 0; maintain(dtgt)
	:: mode == DO_SWITCH -> mode = 0; runSwitch()
	:: else
	fi;
endpass:
	skip;
	d_step {
		busy = 0;
		act = 0; dtgt = 0; fromGoal = 1; did = 0; mode = 0; mt = 0; res = 0; tUp = 0; pj = 0;
		oAsked = 0; oZx = 0; oId = 0; oGoal = 0; oActive = 0; oPhase = 0;
		for (k : 0 .. NM - 1) { mem[k] = 0; mst[k] = 0; hset[k] = 0 }
		k = 0;
		bw[0] = 0; bw[1] = 0; bws[0] = 0; bws[1] = 0; bres[0] = 0; bres[1] = 0
	}
}

/* The controllers. Only the leader acts, so one process plays every leader
 * in turn: when Env moves leadership (the epoch grows), the pass in
 * progress stops at once (lead's context is cancelled) and the process
 * starts again as the new leader, with nothing but ZooKeeper, the registry
 * and its new epoch to go on. */
proctype Controller() {
	byte myEp = 1;
	byte oAsked, oZx, oId, oGoal, oActive, oPhase;
	byte act, dtgt, did, mode, mt, res, tUp, k, pj;
	bit fromGoal = 1;           /* ghost: this pass acts toward Decide's target, not the old color */
	bit mem[NM];
	byte mst[NM];
	bit hset[NM];
	byte bw[2], bws[2], bres[2];  /* the break phase's batch: member slot, state, result of each worker */
#ifdef BUG_BATCH_NO_JOIN
	byte j;
#endif
#ifdef BUG_TOGGLE
	bit first = 1;
#endif
end:
	do
	:: {
		do
		:: reconcile()
		od
	   } unless { epoch != myEp };
	   d_step {
		myEp = epoch;
		act = 0; dtgt = 0; fromGoal = 1; did = 0; mode = 0; mt = 0; res = 0; tUp = 0; pj = 0;
		oAsked = 0; oZx = 0; oId = 0; oGoal = 0; oActive = 0; oPhase = 0;
		for (k : 0 .. NM - 1) { mem[k] = 0; mst[k] = 0; hset[k] = 0 }
		k = 0;
		bw[0] = 0; bw[1] = 0; bws[0] = 0; bws[1] = 0; bres[0] = 0; bres[1] = 0;
#ifdef BUG_TOGGLE
		first = 1;
#endif
	   }
	od
}

init {
	atomic {
		/* blue is live: b0 b1 healthy and UP, g0 g1 OUT_OF_SERVICE, each
		 * healthy or not */
		alive[0] = 1; alive[1] = 1; alive[2] = 1; alive[3] = 1;
		healthy[0] = 1; healthy[1] = 1;
		if
		:: healthy[2] = 1
		:: healthy[2] = 0
		fi;
		if
		:: healthy[3] = 1
		:: healthy[3] = 0
		fi;
		status[0] = S_UP; status[1] = S_UP; status[2] = S_OUT; status[3] = S_OUT;
		run Controller();
		run Net();
		run Watch();
		run Env()
	}
}
