// Shared by the kcp2k echo programs of kcpnet's interop test (interop/run.sh): command-line
// parsing and the two configurations under test. Our code; it only uses kcp2k's public API.
// Kept to C# 6 so that Mono's mcs compiles it too.
using System;
using System.Collections.Generic;
using kcp2k;

namespace KcpnetInterop
{
    public static class Cli
    {
        // Parses "--name value" and bare "--flag" arguments; flags listed in `bare` take no value.
        public static Dictionary<string, string> Parse(string[] args, string[] bare, string usage)
        {
            var result = new Dictionary<string, string>();
            var bareSet = new HashSet<string>(bare);
            for (int i = 0; i < args.Length; ++i)
            {
                string a = args[i];
                if (a == "-h" || a == "--help") { Console.WriteLine(usage); Environment.Exit(0); }
                if (!a.StartsWith("--")) Fail(usage, "unexpected argument " + a);
                string name = a.Substring(2);
                if (bareSet.Contains(name)) { result[name] = "true"; continue; }
                if (i + 1 >= args.Length) Fail(usage, a + " needs a value");
                result[name] = args[++i];
            }
            return result;
        }

        public static void Fail(string usage, string message)
        {
            Console.Error.WriteLine("error: " + message);
            Console.Error.WriteLine(usage);
            Environment.Exit(2);
        }

        public static int Int(Dictionary<string, string> a, string name, int def, string usage)
        {
            string v;
            if (!a.TryGetValue(name, out v)) return def;
            int r;
            if (!int.TryParse(v, out r)) Fail(usage, "--" + name + ": not a number: " + v);
            return r;
        }

        // The configuration a preset name stands for: "kcp2k" is KcpConfig's defaults, "mirror"
        // is what Mirror's KcpTransport component passes (its field defaults: DualMode, 7 MiB
        // socket buffers, NoDelay, Interval 10, Timeout 10000, FastResend 2, no congestion
        // window, windows 4096/4096, MaxRetransmit = Kcp.DEADLINK * 2 = 40, Mtu 1200).
        public static KcpConfig Preset(string name, string usage)
        {
            switch (name)
            {
                case "kcp2k":
                case "default":
                    return new KcpConfig();
                case "mirror":
                    return new KcpConfig(
                        DualMode: true,
                        RecvBufferSize: 1024 * 1024 * 7,
                        SendBufferSize: 1024 * 1024 * 7,
                        Mtu: Kcp.MTU_DEF,
                        NoDelay: true,
                        Interval: 10,
                        FastResend: 2,
                        CongestionWindow: false,
                        SendWindowSize: 4096,
                        ReceiveWindowSize: 4096,
                        Timeout: 10000,
                        MaxRetransmits: Kcp.DEADLINK * 2);
                default:
                    Fail(usage, "--preset: unknown preset " + name + " (kcp2k or mirror)");
                    return null;
            }
        }

        public static string Describe(KcpConfig c)
        {
            return string.Format(
                "mtu {0}, windows {1} {2}, interval {3} ms, timeout {4} ms, nodelay {5}, fast resend {6}, " +
                "max retransmits {7}, dual mode {8}; max reliable {9} bytes, max unreliable {10} bytes",
                c.Mtu, c.SendWindowSize, c.ReceiveWindowSize, c.Interval, c.Timeout, c.NoDelay,
                c.FastResend, c.MaxRetransmits, c.DualMode,
                KcpPeer.ReliableMaxMessageSize(c.Mtu, c.ReceiveWindowSize),
                KcpPeer.UnreliableMaxMessageSize(c.Mtu));
        }
    }
}
