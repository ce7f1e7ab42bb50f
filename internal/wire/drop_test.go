package wire

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"treasure/internal/game"
)

func TestParseDrop(t *testing.T) {
	longID := strings.Repeat("a", game.MaxTreasureID)
	tests := []struct {
		name string
		body string
		want []Drop
		code game.Code // "" for accepted
	}{
		{"two treasures", `{"treasures":[{"id":"gold-1","node":42,"points":100},{"id":"Silver_2","node":7,"points":1}]}`,
			[]Drop{{"gold-1", 42, 100}, {"Silver_2", 7, 1}}, ""},
		{"empty list", `{"treasures":[]}`, nil, ""},
		{"shared node and repeated id kept", `{"treasures":[{"id":"a","node":1,"points":1},{"id":"b","node":1,"points":2},{"id":"a","node":1,"points":3}]}`,
			[]Drop{{"a", 1, 1}, {"b", 1, 2}, {"a", 1, 3}}, ""},
		{"unknown keys ignored", `{"treasures":[{"id":"a","node":1,"points":5,"hint":"under the bridge"}],"note":1}`, []Drop{{"a", 1, 5}}, ""},
		{"longest id and most points", `{"treasures":[{"id":"` + longID + `","node":3,"points":2147483647}]}`, []Drop{{longID, 3, 1<<31 - 1}}, ""},
		{"escaped id", `{"treasures":[{"id":"\u0061b","node":3,"points":2}]}`, []Drop{{"ab", 3, 2}}, ""},
		{"huge node saturates", `{"treasures":[{"id":"a","node":99999999999999999999999,"points":2}]}`, []Drop{{"a", 1<<64 - 1, 2}}, ""},

		{"invalid JSON", `{"treasures":[`, nil, game.CodeBadJSON},
		{"empty body", ``, nil, game.CodeBadJSON},
		{"not an object", `[{"id":"a","node":1,"points":1}]`, nil, game.CodeBadRequest},
		{"null", `null`, nil, game.CodeBadRequest},
		{"missing treasures", `{"treasure":[]}`, nil, game.CodeBadRequest},
		{"treasures not an array", `{"treasures":{"id":"a"}}`, nil, game.CodeBadRequest},
		{"treasures null", `{"treasures":null}`, nil, game.CodeBadRequest},
		{"element not an object", `{"treasures":[1]}`, nil, game.CodeBadRequest},
		{"element null", `{"treasures":[null]}`, nil, game.CodeBadRequest},
		{"missing id", `{"treasures":[{"node":1,"points":1}]}`, nil, game.CodeBadRequest},
		{"numeric id", `{"treasures":[{"id":5,"node":1,"points":1}]}`, nil, game.CodeBadRequest},
		{"empty id", `{"treasures":[{"id":"","node":1,"points":1}]}`, nil, game.CodeBadRequest},
		{"id too long", `{"treasures":[{"id":"` + longID + `x","node":1,"points":1}]}`, nil, game.CodeBadRequest},
		{"id with a space", `{"treasures":[{"id":"a b","node":1,"points":1}]}`, nil, game.CodeBadRequest},
		{"id with non-ASCII", `{"treasures":[{"id":"café","node":1,"points":1}]}`, nil, game.CodeBadRequest},
		{"missing node", `{"treasures":[{"id":"a","points":1}]}`, nil, game.CodeBadRequest},
		{"negative node", `{"treasures":[{"id":"a","node":-1,"points":1}]}`, nil, game.CodeBadRequest},
		{"fractional node", `{"treasures":[{"id":"a","node":1.5,"points":1}]}`, nil, game.CodeBadRequest},
		{"string node", `{"treasures":[{"id":"a","node":"1","points":1}]}`, nil, game.CodeBadRequest},
		{"missing points", `{"treasures":[{"id":"a","node":1}]}`, nil, game.CodeBadRequest},
		{"zero points", `{"treasures":[{"id":"a","node":1,"points":0}]}`, nil, game.CodeBadRequest},
		{"negative points", `{"treasures":[{"id":"a","node":1,"points":-5}]}`, nil, game.CodeBadRequest},
		{"points past int32", `{"treasures":[{"id":"a","node":1,"points":2147483648}]}`, nil, game.CodeBadRequest},
		{"points past int64", `{"treasures":[{"id":"a","node":1,"points":99999999999999999999999}]}`, nil, game.CodeBadRequest},
		{"fractional points", `{"treasures":[{"id":"a","node":1,"points":1.5}]}`, nil, game.CodeBadRequest},
		{"bad second treasure", `{"treasures":[{"id":"a","node":1,"points":1},{"id":"b","node":1}]}`, nil, game.CodeBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseDrop([]byte(tc.body), nil)
			if tc.code == "" {
				if err != nil {
					t.Fatalf("error %v", err)
				}
				if !slices.Equal(got, tc.want) {
					t.Fatalf("got %+v, want %+v", got, tc.want)
				}
				return
			}
			var ge *game.Error
			if !errors.As(err, &ge) || ge.Code != tc.code {
				t.Fatalf("got %v (%+v), want %s", err, got, tc.code)
			}
			if len(got) != 0 {
				t.Fatalf("returned treasures %+v along with an error", got)
			}
		})
	}
}

func TestParseDropNamesTheTreasure(t *testing.T) {
	_, err := ParseDrop([]byte(`{"treasures":[{"id":"a","node":1,"points":1},{"id":"b","node":1,"points":0}]}`), nil)
	if err == nil || !strings.Contains(err.Error(), "treasures[1]") {
		t.Fatalf("error %v does not name treasures[1]", err)
	}
}
