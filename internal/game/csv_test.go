package game

import (
	"strings"
	"testing"
)

func TestReadTreasureCSV(t *testing.T) {
	rows, err := ReadTreasureCSV(strings.NewReader("id,node,points\ngold,12,50\n\nsilver, 3 ,5\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0] != (TreasureRow{"gold", 12, 50, 2}) || rows[1] != (TreasureRow{"silver", 3, 5, 4}) {
		t.Fatalf("rows %+v", rows)
	}
	// Columns in another order.
	rows, err = ReadTreasureCSV(strings.NewReader("points,id,node\n9,x,1\n"))
	if err != nil || len(rows) != 1 || rows[0].ID != "x" || rows[0].Points != 9 || rows[0].NodeID != 1 {
		t.Fatalf("reordered: %+v %v", rows, err)
	}
}

func TestReadTreasureCSVErrorsNameTheLine(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", "line 1: empty file"},
		{"no header", "gold,1,5\n", "line 1: header"},
		{"short row", "id,node,points\na,1,1\nb,2\n", "line 3: 2 fields"},
		{"bad node", "id,node,points\na,x,1\n", `line 2: node "x"`},
		{"zero node", "id,node,points\na,0,1\n", "line 2: node"},
		{"negative node", "id,node,points\na,-4,1\n", "line 2: node"},
		{"bad points", "id,node,points\na,1,many\n", `line 2: points "many"`},
		{"zero points", "id,node,points\na,1,0\n", "line 2: treasure a: points 0"},
		{"bad id", "id,node,points\na,1,1\nno way,2,2\n", "line 3: treasure id"},
		{"quote", "id,node,points\n\"a,1,1\n", "line 2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadTreasureCSV(strings.NewReader(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}
