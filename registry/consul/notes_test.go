package consul

import "testing"

func TestMaintenanceNotesNameTheSwitchStrictly(t *testing.T) {
	const id = "hello-1"
	for _, tc := range []struct {
		desc  string
		notes string
		want  int64
	}{
		{desc: "the notes a switch's OUT_OF_SERVICE writes", notes: maintNotes(7), want: 7},
		{desc: "the largest id", notes: maintNotes(9223372036854775807), want: 9223372036854775807},
		{desc: "an OUT_OF_SERVICE without a switch", notes: maintNotes(0), want: 0},
		{desc: "Consul's default reason", notes: "Maintenance mode is enabled for this service, but no reason was provided. This is a default message.", want: 0},
		{desc: "a leading zero", notes: "switchyard: OUT_OF_SERVICE (switch 07)", want: 0},
		{desc: "a sign", notes: "switchyard: OUT_OF_SERVICE (switch +7)", want: 0},
		{desc: "a negative id", notes: "switchyard: OUT_OF_SERVICE (switch -7)", want: 0},
		{desc: "zero", notes: "switchyard: OUT_OF_SERVICE (switch 0)", want: 0},
		{desc: "past int64", notes: "switchyard: OUT_OF_SERVICE (switch 9223372036854775808)", want: 0},
		{desc: "trailing text", notes: "switchyard: OUT_OF_SERVICE (switch 7) again", want: 0},
		{desc: "no closing parenthesis", notes: "switchyard: OUT_OF_SERVICE (switch 7", want: 0},
		{desc: "another prefix", notes: "deploy freeze (switch 7)", want: 0},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			checks := []check{
				{CheckID: "service:" + id, Notes: maintNotes(5)}, // not the maintenance check
				{CheckID: maintCheckID(id), Notes: tc.notes},
			}
			if got := switchOf(checks, id); got != tc.want {
				t.Fatalf("switchOf(%q) = %d, want %d", tc.notes, got, tc.want)
			}
		})
	}
	if got := switchOf([]check{{CheckID: maintCheckID("other"), Notes: maintNotes(7)}}, id); got != 0 {
		t.Fatalf("another instance's maintenance named switch %d", got)
	}
}
