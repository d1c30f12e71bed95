package smccompute

import (
	"bytes"
	"encoding/base64"
	"log/slog"
	"maps"
	"strings"
	"testing"
)

// TestDecodeExtraEnv feeds --extra_env values the 2020 compute client
// builds from projects.env (base64 of JSON.stringify of the column) in the
// shapes the 2020 settings UI saves.
func TestDecodeExtraEnv(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, tc := range []struct {
		name string
		arg  string
		want map[string]string
		logs []string // substrings the log must contain
	}{
		{name: "absent", arg: "", want: nil},
		{name: "NULL column", arg: b64(`{}`), want: nil},
		{name: "strings", arg: b64(`{"A":"1","PATH_EXTRA":"/opt/bin"}`), want: map[string]string{"A": "1", "PATH_EXTRA": "/opt/bin"}},
		{name: "numbers and booleans are stringified", arg: b64(`{"N":4,"F":0.25,"BIG":12345678901234567890,"T":true,"FALSE":false}`),
			want: map[string]string{"N": "4", "F": "0.25", "BIG": "12345678901234567890", "T": "true", "FALSE": "false"}},
		{name: "empty string means deleted", arg: b64(`{"KEEP":"x","OLD":""}`), want: map[string]string{"KEEP": "x"},
			logs: []string{"skipping an empty variable", "name=OLD"}},
		{name: "null is skipped", arg: b64(`{"KEEP":"x","GONE":null}`), want: map[string]string{"KEEP": "x"},
			logs: []string{"name=GONE"}},
		{name: "objects and arrays are skipped", arg: b64(`{"KEEP":"x","O":{"a":1},"L":[1]}`), want: map[string]string{"KEEP": "x"},
			logs: []string{"name=L", "name=O", "not a string, number or boolean"}},
		{name: "invalid names are skipped", arg: b64(`{"KEEP":"x","my var":"y","1X":"z"}`), want: map[string]string{"KEEP": "x"},
			logs: []string{`name="my var"`, "name=1X", "invalid variable name"}},
		{name: "the project ID is not overridable", arg: b64(`{"COCALC_PROJECT_ID":"other"}`), want: nil,
			logs: []string{"name=COCALC_PROJECT_ID"}},
		{name: "not base64", arg: "%%%", want: nil, logs: []string{"not base64"}},
		{name: "not an object", arg: b64(`["A"]`), want: nil, logs: []string{"not a JSON object"}},
		{name: "surrounding space", arg: " " + b64(`{"A":"b"}`) + "\n", want: map[string]string{"A": "b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			got := decodeExtraEnv(tc.arg, slog.New(slog.NewTextHandler(&buf, nil)))
			if !maps.Equal(got, tc.want) {
				t.Errorf("env %v, want %v", got, tc.want)
			}
			for _, l := range tc.logs {
				if !strings.Contains(buf.String(), l) {
					t.Errorf("log %q lacks %q", buf.String(), l)
				}
			}
			if len(tc.logs) == 0 && buf.Len() > 0 {
				t.Errorf("unexpected log %q", buf.String())
			}
		})
	}
}
