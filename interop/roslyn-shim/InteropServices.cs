// A replacement for the System.Runtime.InteropServices facade (version 4.2.0.0) that
// Roslyn's csc.dll from the .NET Core 2.2 SDK needs on Mono (interop/run.sh): Mono's own
// facade lacks RuntimeEnvironment. It forwards every type of that assembly that csc.dll,
// Microsoft.CodeAnalysis*.dll, System.Reflection.Metadata.dll and
// System.Collections.Immutable.dll refer to (found with ikdasm) to Mono's mscorlib. Our code.
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

[assembly: AssemblyVersion("4.2.0.0")]
[assembly: TypeForwardedTo(typeof(System.DllNotFoundException))]
[assembly: TypeForwardedTo(typeof(CallingConvention))]
[assembly: TypeForwardedTo(typeof(ClassInterfaceType))]
[assembly: TypeForwardedTo(typeof(ComInterfaceType))]
[assembly: TypeForwardedTo(typeof(System.Runtime.InteropServices.ComTypes.IStream))]
[assembly: TypeForwardedTo(typeof(System.Runtime.InteropServices.ComTypes.STATSTG))]
[assembly: TypeForwardedTo(typeof(DefaultDllImportSearchPathsAttribute))]
[assembly: TypeForwardedTo(typeof(DllImportSearchPath))]
[assembly: TypeForwardedTo(typeof(GuidAttribute))]
[assembly: TypeForwardedTo(typeof(InterfaceTypeAttribute))]
[assembly: TypeForwardedTo(typeof(Marshal))]
[assembly: TypeForwardedTo(typeof(MarshalDirectiveException))]
[assembly: TypeForwardedTo(typeof(RuntimeEnvironment))]
[assembly: TypeForwardedTo(typeof(UnmanagedType))]
